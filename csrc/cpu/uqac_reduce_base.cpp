// The x86-64 baseline (or native non-x86) build of the CPU UQAC reduction.
#define FUQ_ISA base
#include "uqac_reduce_impl.h"
