// PCI peer-to-peer memory in the process: mmap of a provider's
// /sys/bus/pci/devices/<bdf>/p2pmem/allocate (kernel 6.2+, CONFIG_PCI_P2PDMA)
// into an external ArrayBuffer, explicit munmap that detaches the
// ArrayBuffer, and a probe of ibv_reg_mr on such a mapping.
//
//   p2pmemPageSize: number                         sysconf(_SC_PAGESIZE)
//   p2pmemMap(path, length) -> ArrayBuffer         MAP_SHARED, offset 0
//   p2pmemUnmap(arrayBuffer) -> void               munmap + detach (once)
//   p2pmemIsMapped(arrayBuffer) -> boolean
//   tryRegisterP2pmem(deviceName, arrayBuffer, offset, length) -> void
//       ibv_open_device + ibv_alloc_pd + ibv_reg_mr (LOCAL_WRITE |
//       REMOTE_READ | REMOTE_WRITE), deregisters on success, throws an
//       RdmaError (syscall 'ibv_reg_mr') that explains a refusal.
#pragma once
#include <napi.h>

namespace rdma {
void InitP2pmem(Napi::Env env, Napi::Object exports);
}
