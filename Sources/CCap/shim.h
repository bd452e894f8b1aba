#ifndef FERRY_CCAP_SHIM_H
#define FERRY_CCAP_SHIM_H
#include <sys/capability.h>
#endif
