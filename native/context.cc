#include "context.h"

#include <arpa/inet.h>
#include <net/if.h>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <map>
#include <mutex>
#include <set>
#include <vector>

#include "util/errors.h"

namespace rdma {

static const napi_type_tag kContextTag = {0x6e6f64652d72646dULL, 0x0000000000001001ULL};

namespace {

struct FlagName {
  uint64_t bit;
  const char* name;
};

Napi::Array FlagNames(Napi::Env env, uint64_t v, const std::vector<FlagName>& names) {
  Napi::Array a = Napi::Array::New(env);
  uint32_t i = 0;
  for (const auto& f : names)
    if (v & f.bit) a.Set(i++, f.name);
  return a;
}

const std::vector<FlagName> kDeviceCaps = {
    {IBV_DEVICE_RESIZE_MAX_WR, "RESIZE_MAX_WR"}, {IBV_DEVICE_BAD_PKEY_CNTR, "BAD_PKEY_CNTR"},
    {IBV_DEVICE_BAD_QKEY_CNTR, "BAD_QKEY_CNTR"}, {IBV_DEVICE_RAW_MULTI, "RAW_MULTI"},
    {IBV_DEVICE_AUTO_PATH_MIG, "AUTO_PATH_MIG"}, {IBV_DEVICE_CHANGE_PHY_PORT, "CHANGE_PHY_PORT"},
    {IBV_DEVICE_UD_AV_PORT_ENFORCE, "UD_AV_PORT_ENFORCE"}, {IBV_DEVICE_CURR_QP_STATE_MOD, "CURR_QP_STATE_MOD"},
    {IBV_DEVICE_SHUTDOWN_PORT, "SHUTDOWN_PORT"}, {IBV_DEVICE_INIT_TYPE, "INIT_TYPE"},
    {IBV_DEVICE_PORT_ACTIVE_EVENT, "PORT_ACTIVE_EVENT"}, {IBV_DEVICE_SYS_IMAGE_GUID, "SYS_IMAGE_GUID"},
    {IBV_DEVICE_RC_RNR_NAK_GEN, "RC_RNR_NAK_GEN"}, {IBV_DEVICE_SRQ_RESIZE, "SRQ_RESIZE"},
    {IBV_DEVICE_N_NOTIFY_CQ, "N_NOTIFY_CQ"}, {IBV_DEVICE_MEM_WINDOW, "MEM_WINDOW"},
    {IBV_DEVICE_UD_IP_CSUM, "UD_IP_CSUM"}, {IBV_DEVICE_XRC, "XRC"},
    {IBV_DEVICE_MEM_MGT_EXTENSIONS, "MEM_MGT_EXTENSIONS"}, {IBV_DEVICE_MEM_WINDOW_TYPE_2A, "MEM_WINDOW_TYPE_2A"},
    {IBV_DEVICE_MEM_WINDOW_TYPE_2B, "MEM_WINDOW_TYPE_2B"}, {IBV_DEVICE_RC_IP_CSUM, "RC_IP_CSUM"},
    {IBV_DEVICE_RAW_IP_CSUM, "RAW_IP_CSUM"}, {IBV_DEVICE_MANAGED_FLOW_STEERING, "MANAGED_FLOW_STEERING"},
};

const std::vector<FlagName> kOdpGeneral = {
    {IBV_ODP_SUPPORT, "SUPPORT"}, {IBV_ODP_SUPPORT_IMPLICIT, "SUPPORT_IMPLICIT"}};

const std::vector<FlagName> kOdpTransport = {
    {IBV_ODP_SUPPORT_SEND, "SEND"}, {IBV_ODP_SUPPORT_RECV, "RECV"}, {IBV_ODP_SUPPORT_WRITE, "WRITE"},
    {IBV_ODP_SUPPORT_READ, "READ"}, {IBV_ODP_SUPPORT_ATOMIC, "ATOMIC"}, {IBV_ODP_SUPPORT_SRQ_RECV, "SRQ_RECV"}};

const char* AtomicCapName(ibv_atomic_cap c) {
  switch (c) {
    case IBV_ATOMIC_NONE: return "NONE";
    case IBV_ATOMIC_HCA: return "HCA";
    case IBV_ATOMIC_GLOB: return "GLOB";
    default: return "UNKNOWN";
  }
}

const char* PortStateName(ibv_port_state s) {
  switch (s) {
    case IBV_PORT_NOP: return "NOP";
    case IBV_PORT_DOWN: return "DOWN";
    case IBV_PORT_INIT: return "INIT";
    case IBV_PORT_ARMED: return "ARMED";
    case IBV_PORT_ACTIVE: return "ACTIVE";
    case IBV_PORT_ACTIVE_DEFER: return "ACTIVE_DEFER";
    default: return "UNKNOWN";
  }
}

int MtuBytes(ibv_mtu m) {
  switch (m) {
    case IBV_MTU_256: return 256;
    case IBV_MTU_512: return 512;
    case IBV_MTU_1024: return 1024;
    case IBV_MTU_2048: return 2048;
    case IBV_MTU_4096: return 4096;
    default: return 0;
  }
}

const char* LinkLayerName(uint8_t l) {
  switch (l) {
    case IBV_LINK_LAYER_INFINIBAND: return "InfiniBand";
    case IBV_LINK_LAYER_ETHERNET: return "Ethernet";
    default: return "Unspecified";
  }
}

std::string Guid(uint64_t be) {
  uint64_t g = be64toh(be);
  char buf[24];
  snprintf(buf, sizeof buf, "%04x:%04x:%04x:%04x", unsigned(g >> 48) & 0xffff, unsigned(g >> 32) & 0xffff,
           unsigned(g >> 16) & 0xffff, unsigned(g) & 0xffff);
  return buf;
}

std::string GidString(const ibv_gid& gid) {
  char buf[INET6_ADDRSTRLEN];
  inet_ntop(AF_INET6, gid.raw, buf, sizeof buf);
  return buf;
}

const char* AsyncEventName(ibv_event_type t) {
  switch (t) {
    case IBV_EVENT_CQ_ERR: return "CQ_ERR";
    case IBV_EVENT_QP_FATAL: return "QP_FATAL";
    case IBV_EVENT_QP_REQ_ERR: return "QP_REQ_ERR";
    case IBV_EVENT_QP_ACCESS_ERR: return "QP_ACCESS_ERR";
    case IBV_EVENT_COMM_EST: return "COMM_EST";
    case IBV_EVENT_SQ_DRAINED: return "SQ_DRAINED";
    case IBV_EVENT_PATH_MIG: return "PATH_MIG";
    case IBV_EVENT_PATH_MIG_ERR: return "PATH_MIG_ERR";
    case IBV_EVENT_DEVICE_FATAL: return "DEVICE_FATAL";
    case IBV_EVENT_PORT_ACTIVE: return "PORT_ACTIVE";
    case IBV_EVENT_PORT_ERR: return "PORT_ERR";
    case IBV_EVENT_LID_CHANGE: return "LID_CHANGE";
    case IBV_EVENT_PKEY_CHANGE: return "PKEY_CHANGE";
    case IBV_EVENT_SM_CHANGE: return "SM_CHANGE";
    case IBV_EVENT_SRQ_ERR: return "SRQ_ERR";
    case IBV_EVENT_SRQ_LIMIT_REACHED: return "SRQ_LIMIT_REACHED";
    case IBV_EVENT_QP_LAST_WQE_REACHED: return "QP_LAST_WQE_REACHED";
    case IBV_EVENT_CLIENT_REREGISTER: return "CLIENT_REREGISTER";
    case IBV_EVENT_GID_CHANGE: return "GID_CHANGE";
    case IBV_EVENT_WQ_FATAL: return "WQ_FATAL";
    default: return "UNKNOWN";
  }
}

}  // namespace

void Context::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(env, "Context", {
      InstanceMethod<&Context::Close>("close"),
      InstanceMethod<&Context::QueryDevice>("queryDevice"),
      InstanceMethod<&Context::QueryPort>("queryPort"),
      InstanceMethod<&Context::QueryGidTable>("queryGidTable"),
      InstanceMethod<&Context::WatchEvents>("watchEvents"),
      InstanceMethod<&Context::UnwatchEvents>("unwatchEvents"),
      InstanceAccessor<&Context::GetName>("name"),
      InstanceAccessor<&Context::GetClosed>("closed"),
  });
  exports.Set("Context", cls);
}

// Devices are taken from librdmacm (rdma_get_devices), not opened with
// ibv_open_device: librdmacm binds CM ids to these same contexts, so PDs,
// CQs and MRs made here work with QPs created on CM ids. librdmacm keeps the
// devices open while it is loaded; close() releases our list.
Context::Context(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<Context>(info), Tracked(info.Env(), Tracked::kContext) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kContextTag);
  name_ = ArgString(info[0], "name");
  int n = 0;
  errno = 0;
  list_ = rdma_get_devices(&n);
  if (!list_) Throw(env, "rdma_get_devices", ENODEV, "no RDMA device named '" + name_ + "' (this host has no RDMA devices)");
  for (int i = 0; i < n; i++)
    if (name_ == ibv_get_device_name(list_[i]->device)) ctx_ = list_[i];
  if (!ctx_) {
    rdma_free_devices(list_);
    list_ = nullptr;
    Throw(env, "rdma_get_devices", ENODEV, "no RDMA device named '" + name_ + "'");
  }
}

Context::~Context() { Release(); }

void Context::Release() {
  ReleaseKernelObjects();  // unwatches too
  on_event_.Reset();
  async_.reset();
}

void Context::ReleaseKernelObjects() {
  Unwatch();
  ctx_ = nullptr;
  if (list_) rdma_free_devices(list_);
  list_ = nullptr;
}

ibv_context* Context::Get(Napi::Env env, const char* what) {
  if (!ctx_) ThrowClosed(env, what);
  return ctx_;
}

Context* Context::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<Context>(v, &kContextTag, name, "Context");
}

Napi::Value Context::Close(const Napi::CallbackInfo& info) {
  Release();
  return info.Env().Undefined();
}

Napi::Value Context::GetName(const Napi::CallbackInfo& info) { return Napi::String::New(info.Env(), name_); }
Napi::Value Context::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !ctx_); }

Napi::Value Context::QueryDevice(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_context* ctx = Get(env);
  ibv_device_attr_ex ex = {};
  int rc = ibv_query_device_ex(ctx, nullptr, &ex);
  if (rc) Throw(env, "ibv_query_device_ex", rc);
  const ibv_device_attr& a = ex.orig_attr;
  Napi::Object o = Napi::Object::New(env);
  o.Set("fwVer", a.fw_ver);
  o.Set("nodeGuid", Guid(a.node_guid));
  o.Set("sysImageGuid", Guid(a.sys_image_guid));
  o.Set("maxMrSize", Napi::BigInt::New(env, uint64_t(a.max_mr_size)));
  o.Set("pageSizeCap", Napi::BigInt::New(env, uint64_t(a.page_size_cap)));
  o.Set("vendorId", a.vendor_id);
  o.Set("vendorPartId", a.vendor_part_id);
  o.Set("hwVer", a.hw_ver);
  o.Set("maxQp", a.max_qp);
  o.Set("maxQpWr", a.max_qp_wr);
  o.Set("deviceCapFlags", Napi::BigInt::New(env, uint64_t(a.device_cap_flags)));
  o.Set("capabilities", FlagNames(env, a.device_cap_flags, kDeviceCaps));
  o.Set("maxSge", a.max_sge);
  o.Set("maxSgeRd", a.max_sge_rd);
  o.Set("maxCq", a.max_cq);
  o.Set("maxCqe", a.max_cqe);
  o.Set("maxMr", a.max_mr);
  o.Set("maxPd", a.max_pd);
  o.Set("maxQpRdAtom", a.max_qp_rd_atom);
  o.Set("maxQpInitRdAtom", a.max_qp_init_rd_atom);
  o.Set("maxResRdAtom", a.max_res_rd_atom);
  o.Set("atomicCap", AtomicCapName(a.atomic_cap));
  o.Set("maxMw", a.max_mw);
  o.Set("maxMcastGrp", a.max_mcast_grp);
  o.Set("maxMcastQpAttach", a.max_mcast_qp_attach);
  o.Set("maxTotalMcastQpAttach", a.max_total_mcast_qp_attach);
  o.Set("maxAh", a.max_ah);
  o.Set("maxSrq", a.max_srq);
  o.Set("maxSrqWr", a.max_srq_wr);
  o.Set("maxSrqSge", a.max_srq_sge);
  o.Set("maxPkeys", a.max_pkeys);
  o.Set("localCaAckDelay", a.local_ca_ack_delay);
  o.Set("physPortCnt", a.phys_port_cnt);
  Napi::Object odp = Napi::Object::New(env);
  odp.Set("general", FlagNames(env, ex.odp_caps.general_caps, kOdpGeneral));
  odp.Set("rc", FlagNames(env, ex.odp_caps.per_transport_caps.rc_odp_caps, kOdpTransport));
  odp.Set("uc", FlagNames(env, ex.odp_caps.per_transport_caps.uc_odp_caps, kOdpTransport));
  odp.Set("ud", FlagNames(env, ex.odp_caps.per_transport_caps.ud_odp_caps, kOdpTransport));
  odp.Set("xrc", FlagNames(env, ex.xrc_odp_caps, kOdpTransport));
  o.Set("odpCaps", odp);
  o.Set("deviceCapFlagsEx", Napi::BigInt::New(env, uint64_t(ex.device_cap_flags_ex)));
  o.Set("completionTimestampMask", Napi::BigInt::New(env, uint64_t(ex.completion_timestamp_mask)));
  o.Set("hcaCoreClock", Napi::BigInt::New(env, uint64_t(ex.hca_core_clock)));
  o.Set("maxDmSize", Napi::BigInt::New(env, uint64_t(ex.max_dm_size)));
  o.Set("pciAtomicCaps", Napi::Object::New(env));
  o.Get("pciAtomicCaps").As<Napi::Object>().Set("fetchAdd", ex.pci_atomic_caps.fetch_add);
  o.Get("pciAtomicCaps").As<Napi::Object>().Set("swap", ex.pci_atomic_caps.swap);
  o.Get("pciAtomicCaps").As<Napi::Object>().Set("compareSwap", ex.pci_atomic_caps.compare_swap);
  return o;
}

Napi::Value Context::QueryPort(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_context* ctx = Get(env);
  uint32_t port = ArgU32(info[0], "port");
  if (port < 1 || port > 255) ThrowRange(env, "port must be from 1 to 255");
  ibv_port_attr p = {};
  int rc = ibv_query_port(ctx, uint8_t(port), &p);
  if (rc) Throw(env, "ibv_query_port", rc, "port " + std::to_string(port));
  Napi::Object o = Napi::Object::New(env);
  o.Set("state", PortStateName(p.state));
  o.Set("maxMtu", MtuBytes(p.max_mtu));
  o.Set("activeMtu", MtuBytes(p.active_mtu));
  o.Set("gidTblLen", p.gid_tbl_len);
  o.Set("portCapFlags", p.port_cap_flags);
  o.Set("maxMsgSz", p.max_msg_sz);
  o.Set("pkeyTblLen", p.pkey_tbl_len);
  o.Set("lid", p.lid);
  o.Set("smLid", p.sm_lid);
  o.Set("lmc", p.lmc);
  o.Set("maxVlNum", p.max_vl_num);
  o.Set("smSl", p.sm_sl);
  o.Set("activeWidth", p.active_width);
  o.Set("activeSpeed", p.active_speed);
  o.Set("physState", p.phys_state);
  o.Set("linkLayer", LinkLayerName(p.link_layer));
  return o;
}

Napi::Value Context::QueryGidTable(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_context* ctx = Get(env);
  ibv_device_attr a = {};
  int rc = ibv_query_device(ctx, &a);
  if (rc) Throw(env, "ibv_query_device", rc);
  size_t max = 0;
  for (uint8_t p = 1; p <= a.phys_port_cnt; p++) {
    ibv_port_attr pa = {};
    if (ibv_query_port(ctx, p, &pa) == 0) max += pa.gid_tbl_len;
  }
  std::vector<ibv_gid_entry> entries(max ? max : 1);
  ssize_t n = ibv_query_gid_table(ctx, entries.data(), entries.size(), 0);
  if (n < 0) Throw(env, "ibv_query_gid_table", int(-n));
  Napi::Array out = Napi::Array::New(env, size_t(n));
  for (ssize_t i = 0; i < n; i++) {
    const ibv_gid_entry& e = entries[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("port", e.port_num);
    o.Set("index", e.gid_index);
    o.Set("gid", GidString(e.gid));
    const char* type = e.gid_type == IBV_GID_TYPE_IB ? "IB"
                       : e.gid_type == IBV_GID_TYPE_ROCE_V1 ? "RoCEv1"
                       : e.gid_type == IBV_GID_TYPE_ROCE_V2 ? "RoCEv2" : "unknown";
    o.Set("type", type);
    char ifname[IF_NAMESIZE] = {0};
    if (e.ndev_ifindex && if_indextoname(e.ndev_ifindex, ifname)) o.Set("netdev", ifname);
    else o.Set("netdev", env.Null());
    out.Set(uint32_t(i), o);
  }
  return out;
}

// Every Context over one device shares librdmacm's ibv_context and so its
// async fd: one Poller per ibv_context reads the events and hands each to
// every watching Context. The contexts are shared by the whole process, the
// Poller runs on one environment's event loop, and an event read there can
// only be handed to that environment's JS: so one environment (thread) at a
// time watches a device's events, and the hubs are shared under a mutex.
namespace {
struct AsyncHub {
  Poller* poller = nullptr;
  napi_env owner = nullptr;
  std::set<Context*> watchers;
};
std::mutex g_hubs_mu;
std::map<ibv_context*, AsyncHub> g_hubs;
}  // namespace

// watchEvents(cb): cb({ type, port?, qpNum?, cqHandle?, srqHandle? }) per async event.
Napi::Value Context::WatchEvents(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_context* ctx = Get(env);
  if (!info[0].IsFunction()) ThrowType(env, "callback must be a function");
  std::lock_guard<std::mutex> lock(g_hubs_mu);
  auto found = g_hubs.find(ctx);
  if (found != g_hubs.end() && found->second.owner != napi_env(env)) {
    Throw(env, "ibv_get_async_event", EBUSY, "another thread (worker) watches the async events of " + name_);
  }
  AsyncHub& hub = g_hubs[ctx];
  if (!hub.poller) {
    hub.owner = env;
    int err = SetNonBlocking(ctx->async_fd);
    if (!err) {
      try {
        hub.poller = Poller::Create(env, ctx->async_fd, [ctx]() { DrainEvents(ctx); });
      } catch (...) {
        g_hubs.erase(ctx);
        throw;
      }
    } else {
      g_hubs.erase(ctx);
      Throw(env, "fcntl", err, "async_fd");
    }
    hub.poller->Start();  // never ref'd: events alone do not keep a process alive
  }
  // held weakly and kept alive by this object (see cq.cc: a strong
  // reference to a closure over the JS Device would root it)
  Value().DefineProperty(Napi::PropertyDescriptor::Value("__onEvent", info[0], napi_writable));
  on_event_ = Napi::Weak(info[0].As<Napi::Function>());
  if (!async_) async_ = std::make_unique<Napi::AsyncContext>(env, "rdma:async-events");
  hub.watchers.insert(this);
  return env.Undefined();
}

void Context::StopWatching() {
  Unwatch();
  on_event_.Reset();
}

void Context::Unwatch() {
  if (ctx_) {
    std::lock_guard<std::mutex> lock(g_hubs_mu);
    auto it = g_hubs.find(ctx_);
    if (it != g_hubs.end()) {
      it->second.watchers.erase(this);
      if (it->second.watchers.empty()) {
        it->second.poller->Close();
        g_hubs.erase(it);
      }
    }
  }
}

Napi::Value Context::UnwatchEvents(const Napi::CallbackInfo& info) {
  StopWatching();
  return info.Env().Undefined();
}

// Runs on the owner environment's loop; only that thread adds or removes
// the hub's watchers, so the copy taken under the lock stays valid for the
// calls (each is checked again: a callback may unwatch others).
void Context::DrainEvents(ibv_context* ctx) {
  for (;;) {
    std::set<Context*> watchers;
    {
      std::lock_guard<std::mutex> lock(g_hubs_mu);
      auto it = g_hubs.find(ctx);
      if (it == g_hubs.end()) return;
      watchers = it->second.watchers;
    }
    ibv_async_event ev;
    if (ibv_get_async_event(ctx, &ev) != 0) return;  // EAGAIN: drained
    // copy what JS gets and ack at once, before any Node-API call can fail
    // (ibv_destroy_qp/cq/srq wait for every event of theirs to be acked: one
    // left unacked would hang their close, or the teardown)
    enum { kNone, kPort, kCq, kSrq, kQp } what = kNone;
    uint32_t element = 0;
    switch (ev.event_type) {
      case IBV_EVENT_PORT_ACTIVE: case IBV_EVENT_PORT_ERR: case IBV_EVENT_LID_CHANGE:
      case IBV_EVENT_PKEY_CHANGE: case IBV_EVENT_SM_CHANGE: case IBV_EVENT_CLIENT_REREGISTER:
      case IBV_EVENT_GID_CHANGE:
        what = kPort, element = uint32_t(ev.element.port_num);
        break;
      case IBV_EVENT_CQ_ERR:
        what = kCq, element = ev.element.cq->handle;
        break;
      case IBV_EVENT_SRQ_ERR: case IBV_EVENT_SRQ_LIMIT_REACHED:
        what = kSrq, element = ev.element.srq->handle;
        break;
      case IBV_EVENT_DEVICE_FATAL:
      case IBV_EVENT_WQ_FATAL:
        break;
      default:
        what = kQp, element = ev.element.qp->qp_num;
        break;
    }
    ibv_event_type type = ev.event_type;
    ibv_ack_async_event(&ev);
    Napi::Env env = (*watchers.begin())->Env();
    Napi::HandleScope scope(env);
    Napi::Object o = Napi::Object::New(env);
    o.Set("type", AsyncEventName(type));
    static const char* const kKeys[] = {nullptr, "port", "cqHandle", "srqHandle", "qpNum"};
    if (what != kNone) o.Set(kKeys[what], element);
    for (Context* w : watchers) {
      {
        std::lock_guard<std::mutex> lock(g_hubs_mu);
        auto cur = g_hubs.find(ctx);
        if (cur == g_hubs.end() || !cur->second.watchers.count(w)) continue;  // unwatched meanwhile
      }
      if (!w->on_event_.IsEmpty()) CallFromLoop(env, w->on_event_, *w->async_, {o});
    }
  }
}

}  // namespace rdma
