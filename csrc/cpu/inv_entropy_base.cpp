// The x86-64 baseline (or native non-x86) build of the CPU Inv-Entropy driver.
#define FUQ_ISA base
#include "inv_entropy_impl.h"
