#include "device.h"

#include <infiniband/verbs.h>
#include <cerrno>
#include <cstdio>

#include "util/errors.h"

namespace rdma {

namespace {
const char* NodeTypeName(ibv_node_type t) {
  switch (t) {
    case IBV_NODE_CA: return "CA";
    case IBV_NODE_SWITCH: return "SWITCH";
    case IBV_NODE_ROUTER: return "ROUTER";
    case IBV_NODE_RNIC: return "RNIC";
    case IBV_NODE_USNIC: return "USNIC";
    case IBV_NODE_USNIC_UDP: return "USNIC_UDP";
    case IBV_NODE_UNSPECIFIED: return "UNSPECIFIED";
    default: return "UNKNOWN";
  }
}
const char* TransportName(ibv_transport_type t) {
  switch (t) {
    case IBV_TRANSPORT_IB: return "IB";
    case IBV_TRANSPORT_IWARP: return "IWARP";
    case IBV_TRANSPORT_USNIC: return "USNIC";
    case IBV_TRANSPORT_USNIC_UDP: return "USNIC_UDP";
    case IBV_TRANSPORT_UNSPECIFIED: return "UNSPECIFIED";
    default: return "UNKNOWN";
  }
}

// getDevices(): [{ name, guid, nodeType, transport, ibdevPath }]
// A host without RDMA devices gets []. A kernel without the uverbs interface
// (ib_uverbs not loaded: no /sys/class/infiniband_verbs) is not "no
// devices": libibverbs fails with ENOSYS, thrown as such (lib/verbs/device.ts
// words it for the user), as ibv_devinfo fails there.
Napi::Value GetDevices(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int n = 0;
  errno = 0;
  ibv_device** list = ibv_get_device_list(&n);
  if (!list) {
    if (errno == 0) return Napi::Array::New(env, 0);
    Throw(env, "ibv_get_device_list", errno);
  }
  Napi::Array out = Napi::Array::New(env, n);
  for (int i = 0; i < n; i++) {
    ibv_device* d = list[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("name", ibv_get_device_name(d));
    uint64_t g = be64toh(ibv_get_device_guid(d));
    char buf[24];
    snprintf(buf, sizeof buf, "%04x:%04x:%04x:%04x", unsigned(g >> 48) & 0xffff,
             unsigned(g >> 32) & 0xffff, unsigned(g >> 16) & 0xffff, unsigned(g) & 0xffff);
    o.Set("guid", buf);
    o.Set("nodeType", NodeTypeName(d->node_type));
    o.Set("transport", TransportName(d->transport_type));
    o.Set("ibdevPath", d->ibdev_path);
    out.Set(i, o);
  }
  ibv_free_device_list(list);
  return out;
}
// forkStatus(): ibv_is_fork_initialized() as 'disabled' | 'enabled' | 'unneeded'
Napi::Value ForkStatus(const Napi::CallbackInfo& info) {
  switch (ibv_is_fork_initialized()) {
    case IBV_FORK_ENABLED: return Napi::String::New(info.Env(), "enabled");
    case IBV_FORK_UNNEEDED: return Napi::String::New(info.Env(), "unneeded");
    default: return Napi::String::New(info.Env(), "disabled");
  }
}
}  // namespace

void InitDevice(Napi::Env env, Napi::Object exports) {
  exports.Set("getDevices", Napi::Function::New(env, GetDevices, "getDevices"));
  exports.Set("forkStatus", Napi::Function::New(env, ForkStatus, "forkStatus"));
}

}  // namespace rdma
