#ifndef FERRY_CPCAP_SHIM_H
#define FERRY_CPCAP_SHIM_H
#include <pcap/pcap.h>
#endif
