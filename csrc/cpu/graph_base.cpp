// The x86-64 baseline (or native non-x86) build of the CPU graph spectra.
#define FUQ_ISA base
#include "graph_impl.h"
