// The x86-64 baseline (or native non-x86) build of the CPU ensemble decomposition.
#define FUQ_ISA base
#include "ensemble_stats_impl.h"
