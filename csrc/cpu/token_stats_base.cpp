// The x86-64 baseline (or native non-x86) build of the CPU token-statistics kernel.
#define FUQ_ISA base
#include "token_stats_impl.h"
