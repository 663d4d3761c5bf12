// QueuePair: ibv_create_qp (or rdma_create_qp on a CM id), modify, query,
// post_send with lists of work requests of every opcode, post_recv.
#pragma once
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>
#include <napi.h>
#include <vector>

#include "util/env.h"

namespace rdma {

class CmId;

class QueuePair : public Napi::ObjectWrap<QueuePair>, public Tracked {
 public:
  static void Init(Napi::Env env, Napi::Object exports);
  explicit QueuePair(const Napi::CallbackInfo& info);
  ~QueuePair() override;
  void ReleaseKernelObjects() override;

  ibv_qp* Get(Napi::Env env);
  static QueuePair* From(const Napi::Value& v, const char* name);
  // Called by the CM id when it is destroyed before the QP was closed.
  void DetachFromCm();

 private:
  Napi::Value Close(const Napi::CallbackInfo& info);
  Napi::Value Modify(const Napi::CallbackInfo& info);
  Napi::Value Query(const Napi::CallbackInfo& info);
  Napi::Value PostSend(const Napi::CallbackInfo& info);
  Napi::Value PostRecv(const Napi::CallbackInfo& info);
  Napi::Value PostSendPacked(const Napi::CallbackInfo& info);
  Napi::Value PostRecvPacked(const Napi::CallbackInfo& info);
  Napi::Value SetPackBuffers(const Napi::CallbackInfo& info);
  // the first n records of the recv pack (ibv_post_recv); throws on failure
  void PostPackedRecvs(Napi::Env env, ibv_qp* qp, uint32_t n);
  // the same, for postSendPacked's receives (the error says so)
  void PostRecvsFirst(Napi::Env env, ibv_qp* qp, uint32_t n);
  Napi::Value GetQpNum(const Napi::CallbackInfo& info);
  Napi::Value GetCaps(const Napi::CallbackInfo& info);
  Napi::Value GetClosed(const Napi::CallbackInfo& info);
  int Destroy();

  ibv_qp* qp_ = nullptr;
  rdma_cm_id* cm_id_ = nullptr;  // set when created by rdma_create_qp
  // the id's wrapper, linked both ways: whichever is destroyed first unlinks
  // the other without Node-API calls (finalizers run in any order when an
  // environment is torn down, and JS values are unusable then)
  CmId* cm_wrap_ = nullptr;
  Napi::ObjectReference pd_, send_cq_, recv_cq_, srq_, cm_;
  // the packed fast path's Float64Arrays, bound once (setPackBuffers) so a
  // post is one call with a count: looking a typed array up per call costs
  // more than the rest of the call
  Napi::Reference<Napi::Float64Array> send_pack_, recv_pack_;
  const double* send_pack_data_ = nullptr;
  const double* recv_pack_data_ = nullptr;
  size_t send_pack_len_ = 0, recv_pack_len_ = 0;
  // the queue sizes the provider granted: no list from JS may be longer
  uint32_t max_send_wr_ = 0, max_recv_wr_ = 0, max_send_sge_ = 0, max_recv_sge_ = 0;
};

// Shared with SharedReceiveQueue: parses [{wrId, sge: [{addr, length, lkey}]}]
// into linked recv WRs; a RangeError for more than max_wr WRs or max_sge SGEs
// in one (checked before anything is allocated).
struct RecvStorage {
  std::vector<ibv_recv_wr> wrs;
  std::vector<ibv_sge> sges;
};
void ParseRecvList(const Napi::Value& v, RecvStorage& st, uint32_t max_wr, uint32_t max_sge);

// {dlid, sl, srcPathBits, staticRate, portNum, grh: {dgid, ...}} into an
// ibv_ah_attr (QP modify's ahAttr, AddressHandle)
void ParseAh(const Napi::Object& o, ibv_ah_attr& ah);
// ibv_ah_attr -> the object QueuePair.query() and the CM's UD parameters report
Napi::Object AhToJs(Napi::Env env, const ibv_ah_attr& ah);

}  // namespace rdma
