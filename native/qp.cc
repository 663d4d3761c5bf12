#include "qp.h"

#include <arpa/inet.h>
#include <cerrno>
#include <cstring>
#include <vector>

#include "ah.h"
#include "cm.h"
#include "cq.h"
#include "mr.h"
#include "mw.h"
#include "pd.h"
#include "qp_post.h"
#include "srq.h"
#include "util/errors.h"

namespace rdma {

static const napi_type_tag kQueuePairTag = {0x6e6f64652d72646dULL, 0x0000000000001006ULL};

namespace {

ibv_mtu MtuEnum(Napi::Env env, uint32_t bytes) {
  switch (bytes) {
    case 256: return IBV_MTU_256;
    case 512: return IBV_MTU_512;
    case 1024: return IBV_MTU_1024;
    case 2048: return IBV_MTU_2048;
    case 4096: return IBV_MTU_4096;
    default: ThrowRange(env, "pathMtu must be 256, 512, 1024, 2048 or 4096");
  }
}

uint32_t MtuBytes(ibv_mtu m) { return m >= IBV_MTU_256 && m <= IBV_MTU_4096 ? 128u << m : 0; }

bool Has(const Napi::Object& o, const char* key) {
  return o.Has(key) && !o.Get(key).IsUndefined();
}

uint8_t U8(const Napi::Object& o, const char* key) {
  uint32_t v = ArgU32(o.Get(key), key);
  if (v > 255) ThrowRange(o.Env(), std::string(key) + " must be from 0 to 255");
  return uint8_t(v);
}


// A list length from JS, checked against the queue's capacity before
// anything is allocated for it (2^32-1 entries would be std::bad_alloc).
uint32_t ListLength(Napi::Env env, const Napi::Array& a, uint32_t max, const std::string& what) {
  uint32_t n = a.Length();
  if (n > max) ThrowRange(env, what + " has " + std::to_string(n) + " entries; at most " + std::to_string(max) + " fit");
  return n;
}

void ParseSges(const Napi::Value& v, std::vector<ibv_sge>& out, size_t& count, uint32_t max_sge) {
  Napi::Env env = v.Env();
  count = 0;
  if (v.IsUndefined() || v.IsNull()) return;
  if (!v.IsArray()) ThrowType(env, "sge must be an array of {addr, length, lkey}");
  Napi::Array a = v.As<Napi::Array>();
  uint32_t n = ListLength(env, a, max_sge, "sge (the queue's max SGEs per work request)");
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = a.Get(i);
    if (!e.IsObject()) ThrowType(env, "sge[" + std::to_string(i) + "] must be {addr, length, lkey}");
    Napi::Object o = e.As<Napi::Object>();
    ibv_sge s;
    s.addr = ArgU64(o.Get("addr"), "sge.addr");
    s.length = ArgU32(o.Get("length"), "sge.length");
    s.lkey = ArgU32(o.Get("lkey"), "sge.lkey");
    out.push_back(s);
    count++;
  }
}

}  // namespace

// ibv_ah_attr -> {dlid, sl, portNum, grh?: {dgid, sgidIndex, hopLimit, flowLabel, trafficClass}}
Napi::Object AhToJs(Napi::Env env, const ibv_ah_attr& ah) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("dlid", ah.dlid);
  o.Set("sl", ah.sl);
  o.Set("portNum", ah.port_num);
  if (ah.is_global) {
    char buf[INET6_ADDRSTRLEN];
    inet_ntop(AF_INET6, ah.grh.dgid.raw, buf, sizeof buf);
    Napi::Object g = Napi::Object::New(env);
    g.Set("dgid", buf);
    g.Set("sgidIndex", ah.grh.sgid_index);
    g.Set("hopLimit", ah.grh.hop_limit);
    g.Set("flowLabel", ah.grh.flow_label);
    g.Set("trafficClass", ah.grh.traffic_class);
    o.Set("grh", g);
  }
  return o;
}

void ParseAh(const Napi::Object& o, ibv_ah_attr& ah) {
  Napi::Env env = o.Env();
  if (Has(o, "dlid")) ah.dlid = uint16_t(ArgU32(o.Get("dlid"), "dlid"));
  if (Has(o, "sl")) ah.sl = U8(o, "sl");
  if (Has(o, "srcPathBits")) ah.src_path_bits = U8(o, "srcPathBits");
  if (Has(o, "staticRate")) ah.static_rate = U8(o, "staticRate");
  if (Has(o, "portNum")) ah.port_num = U8(o, "portNum");
  if (Has(o, "grh")) {
    if (!o.Get("grh").IsObject()) ThrowType(env, "ahAttr.grh must be an object");
    Napi::Object g = o.Get("grh").As<Napi::Object>();
    ah.is_global = 1;
    std::string dgid = ArgString(g.Get("dgid"), "grh.dgid");
    if (inet_pton(AF_INET6, dgid.c_str(), ah.grh.dgid.raw) != 1)
      ThrowType(env, "grh.dgid must be an IPv6-format GID string, got '" + dgid + "'");
    if (Has(g, "flowLabel")) ah.grh.flow_label = ArgU32(g.Get("flowLabel"), "grh.flowLabel");
    if (Has(g, "sgidIndex")) ah.grh.sgid_index = U8(g, "sgidIndex");
    ah.grh.hop_limit = Has(g, "hopLimit") ? U8(g, "hopLimit") : 64;
    if (Has(g, "trafficClass")) ah.grh.traffic_class = U8(g, "trafficClass");
  }
}

void QueuePair::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("QueuePair", DefineClass(env, "QueuePair", {
      InstanceMethod<&QueuePair::Close>("close"),
      InstanceMethod<&QueuePair::Modify>("modify"),
      InstanceMethod<&QueuePair::Query>("query"),
      InstanceMethod<&QueuePair::PostSend>("postSend"),
      InstanceMethod<&QueuePair::PostRecv>("postRecv"),
      InstanceMethod<&QueuePair::PostSendPacked>("postSendPacked"),
      InstanceMethod<&QueuePair::PostRecvPacked>("postRecvPacked"),
      InstanceMethod<&QueuePair::SetPackBuffers>("setPackBuffers"),
      InstanceAccessor<&QueuePair::GetQpNum>("qpNum"),
      InstanceAccessor<&QueuePair::GetCaps>("caps"),
      InstanceAccessor<&QueuePair::GetClosed>("closed"),
  }));
}

// new QueuePair(pd, {type, sendCq, recvCq, srq?, maxSendWr, maxRecvWr,
//   maxSendSge, maxRecvSge, maxInlineData, sigAll}, cmId?)
QueuePair::QueuePair(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<QueuePair>(info), Tracked(info.Env(), Tracked::kQueuePair) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kQueuePairTag);
  ProtectionDomain* pdw = ProtectionDomain::From(info[0], "pd");
  ibv_pd* pd = pdw->Get(env);
  if (!info[1].IsObject()) ThrowType(env, "attrs must be an object");
  Napi::Object a = info[1].As<Napi::Object>();
  ibv_qp_init_attr attr = {};
  attr.qp_type = ibv_qp_type(ArgU32(a.Get("type"), "type"));
  CompletionQueue* scq = CompletionQueue::From(a.Get("sendCq"), "sendCq");
  CompletionQueue* rcq = CompletionQueue::From(a.Get("recvCq"), "recvCq");
  attr.send_cq = scq->Get(env);
  attr.recv_cq = rcq->Get(env);
  if (Has(a, "srq") && !a.Get("srq").IsNull()) attr.srq = SharedReceiveQueue::From(a.Get("srq"), "srq")->Get(env);
  attr.cap.max_send_wr = ArgU32(a.Get("maxSendWr"), "maxSendWr");
  attr.cap.max_recv_wr = attr.srq ? 0 : ArgU32(a.Get("maxRecvWr"), "maxRecvWr");
  attr.cap.max_send_sge = ArgU32(a.Get("maxSendSge"), "maxSendSge");
  attr.cap.max_recv_sge = attr.srq ? 0 : ArgU32(a.Get("maxRecvSge"), "maxRecvSge");
  attr.cap.max_inline_data = ArgU32(a.Get("maxInlineData"), "maxInlineData");
  attr.sq_sig_all = ArgBool(a.Get("sigAll"), "sigAll") ? 1 : 0;
  if (info.Length() > 2 && info[2].IsObject()) {
    CmId* idw = CmId::From(info[2], "cmId");
    rdma_cm_id* id = idw->Get(env);
    if (rdma_create_qp(id, pd, &attr) != 0) Throw(env, "rdma_create_qp", errno ? errno : EINVAL);
    qp_ = id->qp;
    cm_id_ = id;
    cm_ = Napi::Persistent(info[2].As<Napi::Object>());
    cm_wrap_ = idw;
    idw->AttachQp(this);
  } else {
    errno = 0;
    qp_ = ibv_create_qp(pd, &attr);
    if (!qp_) Throw(env, "ibv_create_qp", errno ? errno : EINVAL);
  }
  // the sizes the provider granted (at least those asked for): the longest
  // lists a post can carry
  max_send_wr_ = attr.cap.max_send_wr;
  max_recv_wr_ = attr.cap.max_recv_wr;
  max_send_sge_ = attr.cap.max_send_sge;
  max_recv_sge_ = attr.cap.max_recv_sge;
  pd_ = Napi::Persistent(info[0].As<Napi::Object>());
  send_cq_ = Napi::Persistent(a.Get("sendCq").As<Napi::Object>());
  recv_cq_ = Napi::Persistent(a.Get("recvCq").As<Napi::Object>());
  if (attr.srq) srq_ = Napi::Persistent(a.Get("srq").As<Napi::Object>());
}

QueuePair::~QueuePair() { Destroy(); }

void QueuePair::ReleaseKernelObjects() { Destroy(); }

int QueuePair::Destroy() {
  if (!qp_) return 0;
  int rc = 0;
  if (cm_id_) {
    rdma_destroy_qp(cm_id_);
    if (cm_wrap_) cm_wrap_->AttachQp(nullptr);
    cm_wrap_ = nullptr;
  } else {
    rc = ibv_destroy_qp(qp_);
    if (rc) return rc;
  }
  qp_ = nullptr;
  cm_id_ = nullptr;
  return 0;
}

void QueuePair::DetachFromCm() {
  // rdma_destroy_id would not destroy the QP; the id's owner destroys it
  // here first
  if (qp_ && cm_id_) rdma_destroy_qp(cm_id_);
  qp_ = nullptr;
  cm_id_ = nullptr;
  cm_wrap_ = nullptr;
}

ibv_qp* QueuePair::Get(Napi::Env env) {
  if (!qp_) ThrowClosed(env, "QueuePair");
  return qp_;
}

QueuePair* QueuePair::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<QueuePair>(v, &kQueuePairTag, name, "QueuePair");
}

Napi::Value QueuePair::Close(const Napi::CallbackInfo& info) {
  int rc = Destroy();
  if (rc) Throw(info.Env(), "ibv_destroy_qp", rc);
  pd_.Reset();
  send_cq_.Reset();
  send_pack_.Reset();
  recv_pack_.Reset();
  send_pack_data_ = recv_pack_data_ = nullptr;
  send_pack_len_ = recv_pack_len_ = 0;
  recv_cq_.Reset();
  srq_.Reset();
  cm_.Reset();
  return info.Env().Undefined();
}

// modify({qpState, pathMtu, destQpNum, rqPsn, sqPsn, ...}): the attribute
// mask is the set of keys given
Napi::Value QueuePair::Modify(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_qp* qp = Get(env);
  if (!info[0].IsObject()) ThrowType(env, "attrs must be an object");
  Napi::Object o = info[0].As<Napi::Object>();
  ibv_qp_attr a = {};
  int mask = 0;
  if (Has(o, "qpState")) { a.qp_state = ibv_qp_state(ArgU32(o.Get("qpState"), "qpState")); mask |= IBV_QP_STATE; }
  if (Has(o, "curQpState")) { a.cur_qp_state = ibv_qp_state(ArgU32(o.Get("curQpState"), "curQpState")); mask |= IBV_QP_CUR_STATE; }
  if (Has(o, "pathMtu")) { a.path_mtu = MtuEnum(env, ArgU32(o.Get("pathMtu"), "pathMtu")); mask |= IBV_QP_PATH_MTU; }
  if (Has(o, "qkey")) { a.qkey = ArgU32(o.Get("qkey"), "qkey"); mask |= IBV_QP_QKEY; }
  if (Has(o, "rqPsn")) { a.rq_psn = ArgU32(o.Get("rqPsn"), "rqPsn") & 0xffffff; mask |= IBV_QP_RQ_PSN; }
  if (Has(o, "sqPsn")) { a.sq_psn = ArgU32(o.Get("sqPsn"), "sqPsn") & 0xffffff; mask |= IBV_QP_SQ_PSN; }
  if (Has(o, "destQpNum")) { a.dest_qp_num = ArgU32(o.Get("destQpNum"), "destQpNum"); mask |= IBV_QP_DEST_QPN; }
  if (Has(o, "qpAccessFlags")) { a.qp_access_flags = ArgU32(o.Get("qpAccessFlags"), "qpAccessFlags"); mask |= IBV_QP_ACCESS_FLAGS; }
  if (Has(o, "pkeyIndex")) { a.pkey_index = uint16_t(ArgU32(o.Get("pkeyIndex"), "pkeyIndex")); mask |= IBV_QP_PKEY_INDEX; }
  if (Has(o, "portNum")) { a.port_num = U8(o, "portNum"); mask |= IBV_QP_PORT; }
  if (Has(o, "timeout")) { a.timeout = U8(o, "timeout"); mask |= IBV_QP_TIMEOUT; }
  if (Has(o, "retryCnt")) { a.retry_cnt = U8(o, "retryCnt"); mask |= IBV_QP_RETRY_CNT; }
  if (Has(o, "rnrRetry")) { a.rnr_retry = U8(o, "rnrRetry"); mask |= IBV_QP_RNR_RETRY; }
  if (Has(o, "minRnrTimer")) { a.min_rnr_timer = U8(o, "minRnrTimer"); mask |= IBV_QP_MIN_RNR_TIMER; }
  if (Has(o, "maxRdAtomic")) { a.max_rd_atomic = U8(o, "maxRdAtomic"); mask |= IBV_QP_MAX_QP_RD_ATOMIC; }
  if (Has(o, "maxDestRdAtomic")) { a.max_dest_rd_atomic = U8(o, "maxDestRdAtomic"); mask |= IBV_QP_MAX_DEST_RD_ATOMIC; }
  if (Has(o, "ahAttr")) {
    if (!o.Get("ahAttr").IsObject()) ThrowType(env, "ahAttr must be an object");
    ParseAh(o.Get("ahAttr").As<Napi::Object>(), a.ah_attr);
    mask |= IBV_QP_AV;
  }
  // the alternate path (automatic path migration) goes as one attribute:
  // the verb takes its four fields together under IBV_QP_ALT_PATH
  if (Has(o, "altPath")) {
    if (!o.Get("altPath").IsObject()) ThrowType(env, "altPath must be an object");
    Napi::Object alt = o.Get("altPath").As<Napi::Object>();
    if (!alt.Get("ahAttr").IsObject()) ThrowType(env, "altPath.ahAttr must be an object");
    ParseAh(alt.Get("ahAttr").As<Napi::Object>(), a.alt_ah_attr);
    a.alt_pkey_index = uint16_t(ArgU32(alt.Get("pkeyIndex"), "altPath.pkeyIndex"));
    a.alt_port_num = U8(alt, "portNum");
    a.alt_timeout = U8(alt, "timeout");
    mask |= IBV_QP_ALT_PATH;
  }
  if (Has(o, "pathMigState")) { a.path_mig_state = ibv_mig_state(ArgU32(o.Get("pathMigState"), "pathMigState")); mask |= IBV_QP_PATH_MIG_STATE; }
  if (Has(o, "enSqdAsyncNotify")) { a.en_sqd_async_notify = ArgBool(o.Get("enSqdAsyncNotify"), "enSqdAsyncNotify") ? 1 : 0; mask |= IBV_QP_EN_SQD_ASYNC_NOTIFY; }
  if (Has(o, "cap")) {
    if (!o.Get("cap").IsObject()) ThrowType(env, "cap must be an object");
    Napi::Object c = o.Get("cap").As<Napi::Object>();
    a.cap.max_send_wr = ArgU32(c.Get("maxSendWr"), "cap.maxSendWr");
    a.cap.max_recv_wr = ArgU32(c.Get("maxRecvWr"), "cap.maxRecvWr");
    a.cap.max_send_sge = ArgU32(c.Get("maxSendSge"), "cap.maxSendSge");
    a.cap.max_recv_sge = ArgU32(c.Get("maxRecvSge"), "cap.maxRecvSge");
    a.cap.max_inline_data = ArgU32(c.Get("maxInlineData"), "cap.maxInlineData");
    mask |= IBV_QP_CAP;
  }
  if (Has(o, "rateLimit")) { a.rate_limit = ArgU32(o.Get("rateLimit"), "rateLimit"); mask |= IBV_QP_RATE_LIMIT; }
  if (mask == 0) ThrowType(env, "attrs names no attribute to modify");
  int rc = ibv_modify_qp(qp, &a, mask);
  if (rc) Throw(env, "ibv_modify_qp", rc);
  return env.Undefined();
}

Napi::Value QueuePair::Query(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_qp* qp = Get(env);
  ibv_qp_attr a = {};
  ibv_qp_init_attr ia = {};
  int mask = IBV_QP_STATE | IBV_QP_CUR_STATE | IBV_QP_PATH_MTU | IBV_QP_QKEY | IBV_QP_RQ_PSN | IBV_QP_SQ_PSN |
             IBV_QP_DEST_QPN | IBV_QP_ACCESS_FLAGS | IBV_QP_PKEY_INDEX | IBV_QP_PORT | IBV_QP_TIMEOUT |
             IBV_QP_RETRY_CNT | IBV_QP_RNR_RETRY | IBV_QP_MIN_RNR_TIMER | IBV_QP_MAX_QP_RD_ATOMIC |
             IBV_QP_MAX_DEST_RD_ATOMIC | IBV_QP_AV | IBV_QP_CAP | IBV_QP_ALT_PATH | IBV_QP_PATH_MIG_STATE |
             IBV_QP_EN_SQD_ASYNC_NOTIFY;
  int rc = ibv_query_qp(qp, &a, mask, &ia);
  if (rc) Throw(env, "ibv_query_qp", rc);
  Napi::Object o = Napi::Object::New(env);
  o.Set("qpState", uint32_t(a.qp_state));
  o.Set("curQpState", uint32_t(a.cur_qp_state));
  o.Set("pathMtu", MtuBytes(a.path_mtu));
  o.Set("qkey", a.qkey);
  o.Set("rqPsn", a.rq_psn);
  o.Set("sqPsn", a.sq_psn);
  o.Set("destQpNum", a.dest_qp_num);
  o.Set("qpAccessFlags", uint32_t(a.qp_access_flags));
  o.Set("pkeyIndex", a.pkey_index);
  o.Set("portNum", a.port_num);
  o.Set("timeout", a.timeout);
  o.Set("retryCnt", a.retry_cnt);
  o.Set("rnrRetry", a.rnr_retry);
  o.Set("minRnrTimer", a.min_rnr_timer);
  o.Set("maxRdAtomic", a.max_rd_atomic);
  o.Set("maxDestRdAtomic", a.max_dest_rd_atomic);
  o.Set("ahAttr", AhToJs(env, a.ah_attr));
  Napi::Object alt = Napi::Object::New(env);
  alt.Set("ahAttr", AhToJs(env, a.alt_ah_attr));
  alt.Set("pkeyIndex", a.alt_pkey_index);
  alt.Set("portNum", a.alt_port_num);
  alt.Set("timeout", a.alt_timeout);
  o.Set("altPath", alt);
  o.Set("pathMigState", uint32_t(a.path_mig_state));
  o.Set("enSqdAsyncNotify", a.en_sqd_async_notify != 0);
  o.Set("sqDraining", a.sq_draining != 0);
  Napi::Object cap = Napi::Object::New(env);
  cap.Set("maxSendWr", a.cap.max_send_wr);
  cap.Set("maxRecvWr", a.cap.max_recv_wr);
  cap.Set("maxSendSge", a.cap.max_send_sge);
  cap.Set("maxRecvSge", a.cap.max_recv_sge);
  cap.Set("maxInlineData", a.cap.max_inline_data);
  o.Set("cap", cap);
  o.Set("sigAll", ia.sq_sig_all != 0);
  o.Set("type", uint32_t(ia.qp_type));
  return o;
}

// A BIND_MW work request. The new rkey keeps the window's index (upper 24
// bits) and changes the key byte: the caller's (e.g. random, keyByte >= 0)
// or the next one.
void SetBind(Napi::Env env, ibv_send_wr& wr, const Napi::Value& mw_obj, const Napi::Value& mr_obj, uint64_t addr,
             uint64_t length, uint32_t access, int key_byte, Binds& binds, const char* mw_name, const char* mr_name) {
  MemoryWindow* window = MemoryWindow::From(mw_obj, mw_name);
  ibv_mw* mw = window->Get(env);
  ibv_mr* mr = MemoryRegion::From(mr_obj, mr_name)->Get(env);
  wr.bind_mw.mw = mw;
  if (key_byte >= 0) {
    if (uint32_t(key_byte) == (mw->rkey & 0xff)) ThrowRange(env, "keyByte must differ from the current key byte");
    wr.bind_mw.rkey = (mw->rkey & 0xffffff00) | uint32_t(key_byte);
  } else {
    wr.bind_mw.rkey = ibv_inc_rkey(mw->rkey);
  }
  binds.push_back({window, mw, wr.bind_mw.rkey, mr_obj.As<Napi::Object>()});
  wr.bind_mw.bind_info.mr = mr;
  wr.bind_mw.bind_info.addr = addr;
  wr.bind_mw.bind_info.length = length;
  wr.bind_mw.bind_info.mw_access_flags = access;
}

// A bound window's new rkey is valid from the post on (the bind executes in
// order before any later WR); on failure only WRs before `bad` were posted.
// Each posted bind makes its window hold the region and this QP.
void CommitBinds(const Binds& binds, int rc, ibv_send_wr* bad, Napi::Object qp) {
  for (const PendingBind& b : binds) {
    bool posted = true;
    if (rc) {
      for (ibv_send_wr* w = bad; w; w = w->next)
        if (w->opcode == IBV_WR_BIND_MW && w->bind_mw.mw == b.mw && w->bind_mw.rkey == b.rkey) posted = false;
    }
    if (!posted) continue;
    b.mw->rkey = b.rkey;
    b.window->HoldBinding(b.mr, qp);
  }
}

// postSend([{wrId, opcode, flags, sge, imm, invalidateRkey, remoteAddr, rkey,
//   compareAdd, swap, mw, bindMr, bindAddr, bindLength, bindAccess}])
Napi::Value QueuePair::PostSend(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_qp* qp = Get(env);
  if (!info[0].IsArray()) ThrowType(env, "wrs must be an array");
  Napi::Array list = info[0].As<Napi::Array>();
  uint32_t n = ListLength(env, list, max_send_wr_, "wrs (the send queue's maxSendWr)");
  if (n == 0) return env.Undefined();
  std::vector<ibv_send_wr> wrs(n);
  std::vector<ibv_sge> sges;
  std::vector<size_t> sge_counts(n);
  Binds binds;
  sges.reserve(n * 2);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = list.Get(i);
    if (!e.IsObject()) ThrowType(env, "wrs[" + std::to_string(i) + "] must be an object");
    Napi::Object o = e.As<Napi::Object>();
    ibv_send_wr& wr = wrs[i];
    wr = {};
    wr.wr_id = ArgU64(o.Get("wrId"), "wrId");
    wr.opcode = ibv_wr_opcode(ArgU32(o.Get("opcode"), "opcode"));
    wr.send_flags = Has(o, "flags") ? ArgU32(o.Get("flags"), "flags") : 0;
    ParseSges(o.Get("sge"), sges, sge_counts[i], max_send_sge_);
    if (Has(o, "ah")) {
      // UD: the address handle is copied into the WQE at post time (rxe, mlx5)
      wr.wr.ud.ah = AddressHandle::From(o.Get("ah"), "ud.ah")->Get(env);
      wr.wr.ud.remote_qpn = ArgU32(o.Get("remoteQpn"), "ud.remoteQpn");
      wr.wr.ud.remote_qkey = ArgU32(o.Get("remoteQkey"), "ud.remoteQkey");
    }
    switch (wr.opcode) {
      case IBV_WR_SEND_WITH_IMM:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
        wr.imm_data = htobe32(ArgU32(o.Get("imm"), "imm"));
        break;
      case IBV_WR_SEND_WITH_INV:
      case IBV_WR_LOCAL_INV:
        wr.invalidate_rkey = ArgU32(o.Get("invalidateRkey"), "invalidateRkey");
        break;
      default:
        break;
    }
    switch (wr.opcode) {
      case IBV_WR_RDMA_WRITE:
      case IBV_WR_RDMA_WRITE_WITH_IMM:
      case IBV_WR_RDMA_READ:
        wr.wr.rdma.remote_addr = ArgU64(o.Get("remoteAddr"), "remoteAddr");
        wr.wr.rdma.rkey = ArgU32(o.Get("rkey"), "rkey");
        break;
      case IBV_WR_ATOMIC_CMP_AND_SWP:
      case IBV_WR_ATOMIC_FETCH_AND_ADD:
        wr.wr.atomic.remote_addr = ArgU64(o.Get("remoteAddr"), "remoteAddr");
        wr.wr.atomic.rkey = ArgU32(o.Get("rkey"), "rkey");
        wr.wr.atomic.compare_add = ArgU64(o.Get("compareAdd"), "compareAdd");
        if (wr.opcode == IBV_WR_ATOMIC_CMP_AND_SWP) wr.wr.atomic.swap = ArgU64(o.Get("swap"), "swap");
        break;
      case IBV_WR_BIND_MW: {
        // a type 2 window is invalidated (LOCAL_INV / SEND_WITH_INV), never
        // unbound by a null bind: providers dereference bind_info.mr
        if (!Has(o, "bindMr") || o.Get("bindMr").IsNull())
          ThrowType(env, "bind.mr is required: invalidate a type 2 window with LOCAL_INV instead of unbinding");
        int key_byte = -1;
        if (Has(o, "keyByte")) {
          uint32_t kb = ArgU32(o.Get("keyByte"), "keyByte");
          if (kb > 255) ThrowRange(env, "keyByte must be from 0 to 255");
          key_byte = int(kb);
        }
        SetBind(env, wr, o.Get("mw"), o.Get("bindMr"), ArgU64(o.Get("bindAddr"), "bindAddr"),
                ArgU64(o.Get("bindLength"), "bindLength"), ArgU32(o.Get("bindAccess"), "bindAccess"), key_byte, binds,
                "mw", "bindMr");
        break;
      }
      case IBV_WR_SEND:
      case IBV_WR_SEND_WITH_IMM:
      case IBV_WR_SEND_WITH_INV:
      case IBV_WR_LOCAL_INV:
        break;
      default:
        ThrowRange(env, "opcode " + std::to_string(wr.opcode) + " is not supported by postSend");
    }
  }
  size_t off = 0;
  for (uint32_t i = 0; i < n; i++) {
    wrs[i].sg_list = sge_counts[i] ? &sges[off] : nullptr;
    wrs[i].num_sge = int(sge_counts[i]);
    off += sge_counts[i];
    wrs[i].next = i + 1 < n ? &wrs[i + 1] : nullptr;
  }
  ibv_send_wr* bad = nullptr;
  int rc = ibv_post_send(qp, wrs.data(), &bad);
  CommitBinds(binds, rc, bad, Value());
  if (rc) ThrowPost(env, "ibv_post_send", rc, bad, wrs.data(), n);
  return env.Undefined();
}

void ParseRecvList(const Napi::Value& v, RecvStorage& st, uint32_t max_wr, uint32_t max_sge) {
  Napi::Env env = v.Env();
  if (!v.IsArray()) ThrowType(env, "wrs must be an array");
  Napi::Array list = v.As<Napi::Array>();
  uint32_t n = ListLength(env, list, max_wr, "wrs (the receive queue's max work requests)");
  st.wrs.assign(n, ibv_recv_wr{});
  std::vector<size_t> counts(n);
  for (uint32_t i = 0; i < n; i++) {
    Napi::Value e = list.Get(i);
    if (!e.IsObject()) ThrowType(env, "wrs[" + std::to_string(i) + "] must be an object");
    Napi::Object o = e.As<Napi::Object>();
    st.wrs[i].wr_id = ArgU64(o.Get("wrId"), "wrId");
    ParseSges(o.Get("sge"), st.sges, counts[i], max_sge);
  }
  size_t off = 0;
  for (uint32_t i = 0; i < n; i++) {
    st.wrs[i].sg_list = counts[i] ? &st.sges[off] : nullptr;
    st.wrs[i].num_sge = int(counts[i]);
    off += counts[i];
    st.wrs[i].next = i + 1 < n ? &st.wrs[i + 1] : nullptr;
  }
}

Napi::Value QueuePair::PostRecv(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  ibv_qp* qp = Get(env);
  RecvStorage st;
  ParseRecvList(info[0], st, max_recv_wr_, max_recv_sge_);
  if (st.wrs.empty()) return env.Undefined();
  ibv_recv_wr* bad = nullptr;
  int rc = ibv_post_recv(qp, st.wrs.data(), &bad);
  if (rc) ThrowPost(env, "ibv_post_recv", rc, bad, st.wrs.data(), st.wrs.size());
  return env.Undefined();
}

Napi::Value QueuePair::GetQpNum(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), qp_ ? qp_->qp_num : 0);
}
// {maxSendWr, maxRecvWr, maxSendSge, maxRecvSge}: the sizes granted
Napi::Value QueuePair::GetCaps(const Napi::CallbackInfo& info) {
  Napi::Object o = Napi::Object::New(info.Env());
  o.Set("maxSendWr", max_send_wr_);
  o.Set("maxRecvWr", max_recv_wr_);
  o.Set("maxSendSge", max_send_sge_);
  o.Set("maxRecvSge", max_recv_sge_);
  return o;
}
Napi::Value QueuePair::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !qp_); }

}  // namespace rdma
