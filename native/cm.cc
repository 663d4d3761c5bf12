#include "cm.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <cerrno>
#include <cstring>

#include "context.h"
#include "qp.h"
#include "util/env.h"
#include "util/errors.h"

namespace rdma {

static const napi_type_tag kCmIdTag = {0x6e6f64652d72646dULL, 0x0000000000001009ULL};

static const napi_type_tag kCmEventChannelTag = {0x6e6f64652d72646dULL, 0x0000000000001008ULL};


namespace {

const char* CmEventName(rdma_cm_event_type t) {
  switch (t) {
    case RDMA_CM_EVENT_ADDR_RESOLVED: return "ADDR_RESOLVED";
    case RDMA_CM_EVENT_ADDR_ERROR: return "ADDR_ERROR";
    case RDMA_CM_EVENT_ROUTE_RESOLVED: return "ROUTE_RESOLVED";
    case RDMA_CM_EVENT_ROUTE_ERROR: return "ROUTE_ERROR";
    case RDMA_CM_EVENT_CONNECT_REQUEST: return "CONNECT_REQUEST";
    case RDMA_CM_EVENT_CONNECT_RESPONSE: return "CONNECT_RESPONSE";
    case RDMA_CM_EVENT_CONNECT_ERROR: return "CONNECT_ERROR";
    case RDMA_CM_EVENT_UNREACHABLE: return "UNREACHABLE";
    case RDMA_CM_EVENT_REJECTED: return "REJECTED";
    case RDMA_CM_EVENT_ESTABLISHED: return "ESTABLISHED";
    case RDMA_CM_EVENT_DISCONNECTED: return "DISCONNECTED";
    case RDMA_CM_EVENT_DEVICE_REMOVAL: return "DEVICE_REMOVAL";
    case RDMA_CM_EVENT_MULTICAST_JOIN: return "MULTICAST_JOIN";
    case RDMA_CM_EVENT_MULTICAST_ERROR: return "MULTICAST_ERROR";
    case RDMA_CM_EVENT_ADDR_CHANGE: return "ADDR_CHANGE";
    case RDMA_CM_EVENT_TIMEWAIT_EXIT: return "TIMEWAIT_EXIT";
    default: return "UNKNOWN";
  }
}

// host (IPv4 or IPv6 literal) + port -> sockaddr; throws a TypeError naming
// the argument for anything else
void ParseAddr(Napi::Env env, const std::string& host, uint32_t port, sockaddr_storage& ss, const char* what) {
  memset(&ss, 0, sizeof ss);
  if (port > 65535) ThrowRange(env, std::string(what) + " port must be from 0 to 65535");
  auto* s4 = reinterpret_cast<sockaddr_in*>(&ss);
  auto* s6 = reinterpret_cast<sockaddr_in6*>(&ss);
  if (inet_pton(AF_INET, host.c_str(), &s4->sin_addr) == 1) {
    s4->sin_family = AF_INET;
    s4->sin_port = htons(uint16_t(port));
  } else if (inet_pton(AF_INET6, host.c_str(), &s6->sin6_addr) == 1) {
    s6->sin6_family = AF_INET6;
    s6->sin6_port = htons(uint16_t(port));
  } else {
    ThrowType(env, std::string(what) + " must be an IPv4 or IPv6 address literal, got '" + host + "'");
  }
}

Napi::Value AddrToJs(Napi::Env env, sockaddr* sa, uint16_t port_be) {
  char buf[INET6_ADDRSTRLEN] = "";
  if (!sa) return env.Null();
  if (sa->sa_family == AF_INET) inet_ntop(AF_INET, &reinterpret_cast<sockaddr_in*>(sa)->sin_addr, buf, sizeof buf);
  else if (sa->sa_family == AF_INET6) inet_ntop(AF_INET6, &reinterpret_cast<sockaddr_in6*>(sa)->sin6_addr, buf, sizeof buf);
  else return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("host", buf);
  o.Set("port", ntohs(port_be));
  return o;
}

// rdma_ud_param -> {qpNum, qkey, ahAttr: {dlid, sl, portNum, srcPathBits,
// staticRate, grh?: {dgid, sgidIndex, hopLimit, flowLabel, trafficClass}}}
// (the shape QueuePair.modify's and AddressHandle's ahAttr take)
Napi::Object UdParamToJs(Napi::Env env, const rdma_ud_param& ud) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("qpNum", ud.qp_num);
  o.Set("qkey", ud.qkey);
  const ibv_ah_attr& ah = ud.ah_attr;
  Napi::Object a = AhToJs(env, ah);
  a.Set("srcPathBits", ah.src_path_bits);
  a.Set("staticRate", ah.static_rate);
  o.Set("ahAttr", a);
  return o;
}

// {privateData?, responderResources?, initiatorDepth?, retryCount?,
//  rnrRetryCount?, flowControl?} -> rdma_conn_param (private data copied
// into `pd`, which must outlive the call)
void ParseConnParam(const Napi::Value& v, rdma_conn_param& p, std::string& pd) {
  Napi::Env env = v.Env();
  memset(&p, 0, sizeof p);
  p.responder_resources = 1;
  p.initiator_depth = 1;
  p.retry_count = 7;
  p.rnr_retry_count = 7;
  if (v.IsUndefined() || v.IsNull()) return;
  if (!v.IsObject()) ThrowType(env, "param must be an object");
  Napi::Object o = v.As<Napi::Object>();
  auto u8 = [&](const char* key, uint8_t& out, uint32_t max) {
    Napi::Value x = o.Get(key);
    if (x.IsUndefined()) return;
    uint32_t n = ArgU32(x, key);
    if (n > max) ThrowRange(env, std::string(key) + " must be from 0 to " + std::to_string(max));
    out = uint8_t(n);
  };
  u8("responderResources", p.responder_resources, 255);
  u8("initiatorDepth", p.initiator_depth, 255);
  u8("retryCount", p.retry_count, 7);
  u8("rnrRetryCount", p.rnr_retry_count, 7);
  u8("flowControl", p.flow_control, 1);
  Napi::Value d = o.Get("privateData");
  if (!d.IsUndefined() && !d.IsNull()) {
    if (!d.IsTypedArray()) ThrowType(env, "privateData must be a Buffer or Uint8Array");
    auto ta = d.As<Napi::Uint8Array>();
    if (ta.ByteLength() > 255) ThrowRange(env, "privateData must be at most 255 bytes");
    pd.assign(reinterpret_cast<const char*>(ta.Data()), ta.ByteLength());
    p.private_data = pd.data();
    p.private_data_len = uint8_t(pd.size());
  }
}

}  // namespace

// ---------------------------------------------------------------- channel

void CmEventChannel::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("CmEventChannel", DefineClass(env, "CmEventChannel", {
      InstanceMethod<&CmEventChannel::Close>("close"),
      InstanceMethod<&CmEventChannel::Start>("start"),
      InstanceMethod<&CmEventChannel::Ref>("ref"),
      InstanceMethod<&CmEventChannel::Unref>("unref"),
      InstanceAccessor<&CmEventChannel::GetClosed>("closed"),
  }));
}

CmEventChannel::CmEventChannel(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<CmEventChannel>(info), Tracked(info.Env(), Tracked::kCmChannel) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kCmEventChannelTag);
  errno = 0;
  ch_ = rdma_create_event_channel();
  if (!ch_) Throw(env, "rdma_create_event_channel", errno ? errno : ENODEV);
  int err = SetNonBlocking(ch_->fd);
  if (err) {
    rdma_destroy_event_channel(ch_);
    ch_ = nullptr;
    Throw(env, "fcntl", err, "rdma_cm event channel");
  }
}

CmEventChannel::~CmEventChannel() { Release(); }

void CmEventChannel::Release() {
  ReleaseKernelObjects();
  on_event_.Reset();
  async_.reset();
}

void CmEventChannel::ReleaseKernelObjects() {
  if (poller_) poller_->Close();
  poller_ = nullptr;
  // ids first: an id must not outlive its channel (one the kernel refuses
  // to destroy is forgotten: it no longer names this channel)
  std::set<CmId*> ids;
  ids.swap(ids_);
  for (CmId* id : ids)
    if (id->DestroyId()) id->ForgetChannel();
  if (ch_) rdma_destroy_event_channel(ch_);
  ch_ = nullptr;
}

rdma_event_channel* CmEventChannel::Get(Napi::Env env) {
  if (!ch_) ThrowClosed(env, "CmEventChannel");
  return ch_;
}

CmEventChannel* CmEventChannel::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<CmEventChannel>(v, &kCmEventChannelTag, name, "CmEventChannel");
}

Napi::Value CmEventChannel::Close(const Napi::CallbackInfo& info) {
  // the ids first, completely: DestroyId alone (for teardown, where no
  // Node-API call may run) would leave each wrapper rooted by its own
  // reference, never to be collected
  std::set<CmId*> ids(ids_);
  for (CmId* id : ids) id->Destroy();
  Release();
  return info.Env().Undefined();
}

// start(onEvent): onEvent({type, status, id, listenId?, privateData, ...})
Napi::Value CmEventChannel::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_event_channel* ch = Get(env);
  if (!info[0].IsFunction()) ThrowType(env, "onEvent must be a function");
  on_event_ = Napi::Persistent(info[0].As<Napi::Function>());
  if (!async_) async_ = std::make_unique<Napi::AsyncContext>(env, "rdma:cm-events");
  if (!poller_) poller_ = Poller::Create(env, ch->fd, [this]() { Drain(); });
  poller_->Start();
  return env.Undefined();
}

Napi::Value CmEventChannel::Ref(const Napi::CallbackInfo& info) {
  if (poller_) poller_->Ref();
  return info.Env().Undefined();
}

Napi::Value CmEventChannel::Unref(const Napi::CallbackInfo& info) {
  if (poller_) poller_->Unref();
  return info.Env().Undefined();
}

Napi::Value CmEventChannel::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !ch_); }

void CmEventChannel::Drain() {
  for (;;) {
    if (!ch_) return;
    rdma_cm_event* ev = nullptr;
    if (rdma_get_cm_event(ch_, &ev) != 0) return;  // EAGAIN: drained
    Deliver(ev);
  }
}

// Hands one event to JS. The event is acked whatever happens (rdma_destroy_id
// waits for every event it reported to be acked: one left unacked hangs the
// id's close), and a connection request whose id cannot be wrapped is
// rejected and destroyed. A Node-API failure (JS cannot run any more at
// environment teardown) propagates to Poller::OnPoll, which reports or drops it.
void CmEventChannel::Deliver(rdma_cm_event* ev) {
  Napi::Env env = Env();
  bool request = ev->event == RDMA_CM_EVENT_CONNECT_REQUEST;
  bool wrapped = false;  // a new id's wrapper owns it from then on
  std::unique_ptr<Napi::HandleScope> scope;  // for the callback too
  Napi::Object o;
  try {
    scope = std::make_unique<Napi::HandleScope>(env);
    o = Napi::Object::New(env);
    o.Set("type", CmEventName(ev->event));
    o.Set("status", ev->status);
    const void* pdata = nullptr;
    uint8_t plen = 0;
    if (ev->id->ps == RDMA_PS_UDP) {
      pdata = ev->param.ud.private_data;
      plen = ev->param.ud.private_data_len;
      // the peer's address for UD sends (the active side's ESTABLISHED: the
      // passive side's QP number, Q_Key and the address handle attributes)
      if (ev->event == RDMA_CM_EVENT_ESTABLISHED || ev->event == RDMA_CM_EVENT_MULTICAST_JOIN)
        o.Set("ud", UdParamToJs(env, ev->param.ud));
    } else {
      pdata = ev->param.conn.private_data;
      plen = ev->param.conn.private_data_len;
      o.Set("responderResources", ev->param.conn.responder_resources);
      o.Set("initiatorDepth", ev->param.conn.initiator_depth);
    }
    o.Set("privateData", pdata && plen ? Napi::Buffer<uint8_t>::Copy(env, static_cast<const uint8_t*>(pdata), plen)
                                       : Napi::Buffer<uint8_t>::New(env, 0));
    if (request) {
      // a new id for the incoming connection; wrap it before the ack
      CmId* listener = static_cast<CmId*>(ev->listen_id->context);
      Napi::Object nid = GetEnvData(env).cm_id.New({Value(), Napi::External<rdma_cm_id>::New(env, ev->id)});
      wrapped = true;
      o.Set("id", nid);
      if (listener) o.Set("listenId", listener->Value());
    } else {
      CmId* idw = static_cast<CmId*>(ev->id->context);
      o.Set("id", idw ? idw->Value() : env.Null());
    }
  } catch (...) {
    if (request && !wrapped) {
      // not wrapped: refuse the connection rather than leak it
      rdma_cm_id* id = ev->id;
      rdma_reject(id, nullptr, 0);
      rdma_ack_cm_event(ev);
      rdma_destroy_id(id);
    } else {
      rdma_ack_cm_event(ev);
    }
    throw;
  }
  rdma_ack_cm_event(ev);
  if (!on_event_.IsEmpty()) CallFromLoop(env, on_event_, *async_, {o});
}

// ---------------------------------------------------------------- id

void CmId::Init(Napi::Env env, Napi::Object exports) {
  Napi::Function cls = DefineClass(env, "CmId", {
      InstanceMethod<&CmId::Close>("close"),
      InstanceMethod<&CmId::BindAddr>("bindAddr"),
      InstanceMethod<&CmId::ResolveAddr>("resolveAddr"),
      InstanceMethod<&CmId::ResolveRoute>("resolveRoute"),
      InstanceMethod<&CmId::Listen>("listen"),
      InstanceMethod<&CmId::Connect>("connect"),
      InstanceMethod<&CmId::Accept>("accept"),
      InstanceMethod<&CmId::Reject>("reject"),
      InstanceMethod<&CmId::Disconnect>("disconnect"),
      InstanceMethod<&CmId::GetInfo>("info"),
      InstanceAccessor<&CmId::GetClosed>("closed"),
      InstanceAccessor<&CmId::GetPortSpace>("portSpace"),
  });
  GetEnvData(env).cm_id = Napi::Persistent(cls);
  exports.Set("CmId", cls);
}

// new CmId(channel, portSpace: 'TCP' | 'UDP')   (or, internally, an External)
CmId::CmId(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<CmId>(info), Tracked(info.Env(), Tracked::kCmId) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kCmIdTag);
  channel_ = CmEventChannel::From(info[0], "channel");
  rdma_event_channel* ch = channel_->Get(env);
  if (info[1].IsExternal()) {
    id_ = info[1].As<Napi::External<rdma_cm_id>>().Data();
    id_->context = this;
  } else {
    std::string ps = ArgString(info[1], "portSpace");
    rdma_port_space space = ps == "TCP" ? RDMA_PS_TCP : ps == "UDP" ? RDMA_PS_UDP : RDMA_PS_IPOIB;
    if (space == RDMA_PS_IPOIB) ThrowType(env, "portSpace must be 'TCP' or 'UDP'");
    if (rdma_create_id(ch, &id_, this, space) != 0) Throw(env, "rdma_create_id", errno ? errno : EINVAL);
  }
  channel_->Track(this);
  channel_obj_ = Napi::Persistent(info[0].As<Napi::Object>());
  self_ = Napi::Persistent(Value());
}

CmId::~CmId() {
  // an id the kernel refused to destroy is left to it; the channel must not
  // keep a pointer to this object
  if (Destroy() && channel_) channel_->Untrack(this);
}

int CmId::Destroy() {
  int err = DestroyId();
  if (err) return err;  // the id is still there (and still tracked): keep it reachable
  // also after the channel's teardown destroyed the id (DestroyId, without
  // Node-API calls): the references go now
  self_.Reset();
  channel_obj_.Reset();
  return 0;
}

int CmId::DestroyId() {
  if (!id_) return 0;
  if (qp_) qp_->DetachFromCm();
  qp_ = nullptr;
  int rc = rdma_destroy_id(id_);
  // librdmacm frees nothing when the kernel refuses: the id stays usable
  // (and closable) rather than lost
  if (rc) return errno ? errno : EINVAL;
  id_ = nullptr;
  if (channel_) channel_->Untrack(this);
  channel_ = nullptr;
  return 0;
}

void CmId::ReleaseKernelObjects() { DestroyId(); }

rdma_cm_id* CmId::Get(Napi::Env env) {
  if (!id_) ThrowClosed(env, "CmId");
  return id_;
}

CmId* CmId::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<CmId>(v, &kCmIdTag, name, "CmId");
}

Napi::Value CmId::Close(const Napi::CallbackInfo& info) {
  int err = Destroy();
  if (err) Throw(info.Env(), "rdma_destroy_id", err);
  return info.Env().Undefined();
}

Napi::Value CmId::BindAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  sockaddr_storage ss;
  ParseAddr(env, ArgString(info[0], "host"), ArgU32(info[1], "port"), ss, "host");
  if (rdma_bind_addr(id, reinterpret_cast<sockaddr*>(&ss)) != 0) Throw(env, "rdma_bind_addr", errno);
  return env.Undefined();
}

// resolveAddr(srcHost | null, dstHost, dstPort, timeoutMs) -> ADDR_RESOLVED event
Napi::Value CmId::ResolveAddr(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  sockaddr_storage src, dst;
  bool have_src = !(info[0].IsNull() || info[0].IsUndefined());
  if (have_src) ParseAddr(env, ArgString(info[0], "source"), 0, src, "source");
  ParseAddr(env, ArgString(info[1], "host"), ArgU32(info[2], "port"), dst, "host");
  uint32_t tmo = ArgU32(info[3], "timeoutMs");
  if (rdma_resolve_addr(id, have_src ? reinterpret_cast<sockaddr*>(&src) : nullptr, reinterpret_cast<sockaddr*>(&dst),
                        int(tmo)) != 0)
    Throw(env, "rdma_resolve_addr", errno);
  return env.Undefined();
}

Napi::Value CmId::ResolveRoute(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  uint32_t tmo = ArgU32(info[0], "timeoutMs");
  if (rdma_resolve_route(id, int(tmo)) != 0) Throw(env, "rdma_resolve_route", errno);
  return env.Undefined();
}

Napi::Value CmId::Listen(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  int32_t backlog = ArgI32(info[0], "backlog");
  if (rdma_listen(id, backlog) != 0) Throw(env, "rdma_listen", errno);
  return env.Undefined();
}

Napi::Value CmId::Connect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  rdma_conn_param p;
  std::string pd;
  ParseConnParam(info[0], p, pd);
  if (rdma_connect(id, &p) != 0) Throw(env, "rdma_connect", errno);
  return env.Undefined();
}

Napi::Value CmId::Accept(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  rdma_conn_param p;
  std::string pd;
  ParseConnParam(info[0], p, pd);
  if (rdma_accept(id, &p) != 0) Throw(env, "rdma_accept", errno);
  return env.Undefined();
}

Napi::Value CmId::Reject(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  const void* data = nullptr;
  uint8_t len = 0;
  if (info[0].IsTypedArray()) {
    auto ta = info[0].As<Napi::Uint8Array>();
    if (ta.ByteLength() > 255) ThrowRange(env, "privateData must be at most 255 bytes");
    data = ta.Data();
    len = uint8_t(ta.ByteLength());
  } else if (!info[0].IsUndefined() && !info[0].IsNull()) {
    ThrowType(env, "privateData must be a Buffer or Uint8Array");
  }
  if (rdma_reject(id, data, len) != 0) Throw(env, "rdma_reject", errno);
  return env.Undefined();
}

Napi::Value CmId::Disconnect(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  if (rdma_disconnect(id) != 0) Throw(env, "rdma_disconnect", errno);
  return env.Undefined();
}

Napi::Value CmId::GetInfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  rdma_cm_id* id = Get(env);
  Napi::Object o = Napi::Object::New(env);
  o.Set("local", AddrToJs(env, rdma_get_local_addr(id), rdma_get_src_port(id)));
  o.Set("peer", AddrToJs(env, rdma_get_peer_addr(id), rdma_get_dst_port(id)));
  o.Set("portNum", id->port_num);
  o.Set("device", id->verbs ? Napi::Value(Napi::String::New(env, ibv_get_device_name(id->verbs->device))) : env.Null());
  o.Set("qpNum", id->qp ? Napi::Value(Napi::Number::New(env, id->qp->qp_num)) : env.Null());
  return o;
}

Napi::Value CmId::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !id_); }
Napi::Value CmId::GetPortSpace(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!id_) return env.Null();
  return Napi::String::New(env, id_->ps == RDMA_PS_UDP ? "UDP" : "TCP");
}

}  // namespace rdma
