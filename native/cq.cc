#include "cq.h"

#include <cerrno>
#include <vector>

#include "context.h"
#include "util/errors.h"

namespace rdma {

static const napi_type_tag kCompletionQueueTag = {0x6e6f64652d72646dULL, 0x0000000000001005ULL};

void CompletionQueue::Init(Napi::Env env, Napi::Object exports) {
  exports.Set("CompletionQueue", DefineClass(env, "CompletionQueue", {
      InstanceMethod<&CompletionQueue::Close>("close"),
      InstanceMethod<&CompletionQueue::Poll>("poll"),
      InstanceMethod<&CompletionQueue::Start>("start"),
      InstanceMethod<&CompletionQueue::Stop>("stop"),
      InstanceMethod<&CompletionQueue::Ref>("ref"),
      InstanceMethod<&CompletionQueue::Unref>("unref"),
      InstanceMethod<&CompletionQueue::Spin>("spin"),
      InstanceMethod<&CompletionQueue::Idle>("idle"),
      InstanceAccessor<&CompletionQueue::GetHandle>("handle"),
      InstanceAccessor<&CompletionQueue::GetCqe>("cqe"),
      InstanceAccessor<&CompletionQueue::GetClosed>("closed"),
      StaticValue("WC_STRIDE", Napi::Number::New(env, kWcStride)),
  }));
}

// new CompletionQueue(context, cqe, wcBuffer: Uint32Array)
CompletionQueue::CompletionQueue(const Napi::CallbackInfo& info)
    : Napi::ObjectWrap<CompletionQueue>(info), Tracked(info.Env(), Tracked::kRegionOrCq) {
  Napi::Env env = info.Env();
  TagObject(info.This().As<Napi::Object>(), &kCompletionQueueTag);
  Context* ctxw = Context::From(info[0], "context");
  ibv_context* ctx = ctxw->Get(env);
  uint32_t cqe = ArgU32(info[1], "cqe");
  if (cqe < 1) ThrowRange(env, "cqe must be >= 1");
  if (!info[2].IsTypedArray() || info[2].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
    ThrowType(env, "wcBuffer must be a Uint32Array");
  Napi::Uint32Array buf = info[2].As<Napi::Uint32Array>();
  if (buf.ElementLength() < kWcStride) ThrowRange(env, "wcBuffer too small");
  channel_ = ibv_create_comp_channel(ctx);
  if (!channel_) Throw(env, "ibv_create_comp_channel", errno ? errno : ENOMEM);
  int err = SetNonBlocking(channel_->fd);
  if (err) {
    ibv_destroy_comp_channel(channel_);
    channel_ = nullptr;
    Throw(env, "fcntl", err, "completion channel");
  }
  errno = 0;
  cq_ = ibv_create_cq(ctx, int(cqe), nullptr, channel_, 0);
  if (!cq_) {
    err = errno ? errno : ENOMEM;
    ibv_destroy_comp_channel(channel_);
    channel_ = nullptr;
    Throw(env, "ibv_create_cq", err, "cqe " + std::to_string(cqe));
  }
  int rc = ibv_req_notify_cq(cq_, 0);
  if (rc) {
    Release();
    Throw(env, "ibv_req_notify_cq", rc);
  }
  wc_buf_ = Napi::Persistent(buf);
  wc_data_ = buf.Data();
  wc_cap_ = uint32_t(buf.ElementLength() / kWcStride);
  context_ = Napi::Persistent(info[0].As<Napi::Object>());
}

CompletionQueue::~CompletionQueue() { Release(); }

void CompletionQueue::ReleaseKernelObjects() { Release(); }

void CompletionQueue::Release() {
  if (poller_) poller_->Close();
  poller_ = nullptr;
  if (cq_) {
    if (unacked_) ibv_ack_cq_events(cq_, unacked_);  // destroy waits for every ack
    unacked_ = 0;
    if (ibv_destroy_cq(cq_) != 0) {
      // still used by a QP (its native object holds this one, so only at a
      // teardown that could not destroy the QP): the channel stays with it
      cq_ = nullptr;
      channel_ = nullptr;
      return;
    }
    cq_ = nullptr;
  }
  if (channel_) {
    ibv_destroy_comp_channel(channel_);
    channel_ = nullptr;
  }
}

ibv_cq* CompletionQueue::Get(Napi::Env env) {
  if (!cq_) ThrowClosed(env, "CompletionQueue");
  return cq_;
}

CompletionQueue* CompletionQueue::From(const Napi::Value& v, const char* name) {
  return UnwrapTagged<CompletionQueue>(v, &kCompletionQueueTag, name, "CompletionQueue");
}

Napi::Value CompletionQueue::Close(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (cq_) {
    if (unacked_) ibv_ack_cq_events(cq_, unacked_);  // destroy waits for every ack
    unacked_ = 0;
    int rc = ibv_destroy_cq(cq_);
    // EBUSY (a QP still uses it): the CQ stays open, and so stays watched
    // (closing the poller first left an open CQ nobody would hear again)
    if (rc) Throw(env, "ibv_destroy_cq", rc, "queue pairs using it must be closed first");
    cq_ = nullptr;
    if (poller_) poller_->Close();
    poller_ = nullptr;
    if (channel_) ibv_destroy_comp_channel(channel_);
    channel_ = nullptr;
    on_batch_.Reset();
    async_.reset();
    context_.Reset();
    wc_buf_.Reset();
    wc_data_ = nullptr;
  }
  return env.Undefined();
}

int CompletionQueue::PollInto() {
  ibv_wc wcs[32];
  uint32_t n = 0;
  while (n < wc_cap_) {
    int want = int(std::min<uint32_t>(32, wc_cap_ - n));
    int got = ibv_poll_cq(cq_, want, wcs);
    if (got < 0) return got;
    for (int i = 0; i < got; i++, n++) {
      const ibv_wc& wc = wcs[i];
      uint32_t* w = wc_data_ + size_t(n) * kWcStride;
      w[0] = uint32_t(wc.wr_id);
      w[1] = uint32_t(wc.wr_id >> 32);
      w[2] = wc.status;
      w[3] = wc.opcode;
      w[4] = wc.vendor_err;
      w[5] = wc.byte_len;
      // imm_data and invalidated_rkey share a union: pass the immediate in
      // host order, else the raw value (the TS layer decides whether it is
      // an invalidated rkey: rxe flags that differently, see cq.ts)
      w[6] = (wc.wc_flags & IBV_WC_WITH_IMM) ? be32toh(wc.imm_data) : wc.invalidated_rkey;
      w[7] = wc.qp_num;
      w[8] = wc.src_qp;
      w[9] = wc.wc_flags;
    }
    if (got < want) break;
  }
  return int(n);
}

// poll(spinUs = 0): number of completions written into the buffer. With
// spinUs > 0 it keeps polling an empty CQ for up to that many microseconds
// (busy-poll mode: trades a bounded stall of the event loop for latency).
Napi::Value CompletionQueue::Poll(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Get(env);
  uint32_t spin_us = info.Length() > 0 && !info[0].IsUndefined() ? ArgU32(info[0], "spinUs") : 0;
  int n = PollInto();
  if (n == 0 && spin_us > 0) {
    uint64_t deadline = uv_hrtime() + uint64_t(spin_us) * 1000;
    while (n == 0 && uv_hrtime() < deadline) n = PollInto();
  }
  if (n < 0) Throw(env, "ibv_poll_cq", -n);
  return Napi::Number::New(env, n);
}

// start(onBatch): onBatch(count) for each batch of completions
Napi::Value CompletionQueue::Start(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Get(env);
  if (!info[0].IsFunction()) ThrowType(env, "onBatch must be a function");
  // the callback (a closure over the JS CompletionQueue) hangs off this
  // object, and the reference to it is weak: a strong one would root the
  // JS side and a CQ dropped without close() would never be collected
  Value().DefineProperty(Napi::PropertyDescriptor::Value("__onBatch", info[0], napi_writable));
  on_batch_ = Napi::Weak(info[0].As<Napi::Function>());
  if (!async_) async_ = std::make_unique<Napi::AsyncContext>(env, "rdma:completions");
  if (!poller_) poller_ = Poller::Create(env, channel_->fd, [this]() { OnReadable(); });
  poller_->Start();
  return env.Undefined();
}

Napi::Value CompletionQueue::Stop(const Napi::CallbackInfo& info) {
  if (poller_) poller_->Stop();
  return info.Env().Undefined();
}

Napi::Value CompletionQueue::Ref(const Napi::CallbackInfo& info) {
  if (poller_) poller_->Ref();
  return info.Env().Undefined();
}

Napi::Value CompletionQueue::Unref(const Napi::CallbackInfo& info) {
  if (poller_) poller_->Unref();
  return info.Env().Undefined();
}

// spin(): the JS side polls this CQ itself from now on (busy polling):
// stop watching the channel, so that a completion costs neither a channel
// read, a re-arm nor a callback. The CQ is left as it is (armed at most once:
// that one event waits in the channel until idle() reads it).
Napi::Value CompletionQueue::Spin(const Napi::CallbackInfo& info) {
  Get(info.Env());
  if (poller_) poller_->Stop();
  return info.Env().Undefined();
}

// idle(): the JS side stops polling and sleeps on the channel. Arm first,
// then poll once more: a completion that landed after the last poll but
// before the arm raises no event, so only this poll can see it. Returns
// the number of completions written into the buffer (the JS side delivers
// them), or -errno when the CQ can no longer be armed (the device is gone).
// The channel is watched again either way, unless arming failed.
Napi::Value CompletionQueue::Idle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Get(env);
  DrainEvents();
  int rc = ibv_req_notify_cq(cq_, 0);
  if (rc) return Napi::Number::New(env, -rc);
  int n = PollInto();
  if (poller_) poller_->Start();
  return Napi::Number::New(env, n);
}

void CompletionQueue::DrainEvents() {
  // ack in batches: acking takes a mutex
  ibv_cq* ev_cq = nullptr;
  void* ev_ctx = nullptr;
  while (ibv_get_cq_event(channel_, &ev_cq, &ev_ctx) == 0) unacked_++;
  if (unacked_ >= 256) {
    ibv_ack_cq_events(cq_, unacked_);
    unacked_ = 0;
  }
}

void CompletionQueue::OnReadable() {
  Napi::Env env = Env();
  if (!cq_) return;
  // 1. consume the channel's events
  DrainEvents();
  // 2. re-arm, 3. then drain: a completion that lands between the last poll
  // and the arm would otherwise never raise an event
  int rc = ibv_req_notify_cq(cq_, 0);
  Napi::HandleScope scope(env);
  if (rc) {
    ChannelFailed(env, rc);
    return;
  }
  for (;;) {
    if (!cq_ || on_batch_.IsEmpty()) return;  // closed or stopped by the callback
    int n = PollInto();
    if (n < 0) {
      ChannelFailed(env, -n);
      return;
    }
    if (n == 0) return;
    CallFromLoop(env, on_batch_, *async_, {Napi::Number::New(env, n)});
    // the callback switched to busy polling (spin()): the JS side polls now
    if (!poller_ || !poller_->active()) return;
    if (uint32_t(n) < wc_cap_) return;
  }
}

// The CQ can no longer be armed or polled: its device was removed (rxe and
// mlx5 disassociate the user context: ibv_req_notify_cq fails with EIO and
// the channel's fd reports POLLERR, after which libuv stops watching it).
// Nothing more will complete here. onBatch(-errno) tells the JS side; a
// throw from this libuv callback would end the process.
void CompletionQueue::ChannelFailed(Napi::Env env, int err) {
  if (poller_) poller_->Stop();
  CallFromLoop(env, on_batch_, *async_, {Napi::Number::New(env, -err)});
}

Napi::Value CompletionQueue::GetHandle(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cq_ ? cq_->handle : 0);
}
Napi::Value CompletionQueue::GetCqe(const Napi::CallbackInfo& info) {
  return Napi::Number::New(info.Env(), cq_ ? cq_->cqe : 0);
}
Napi::Value CompletionQueue::GetClosed(const Napi::CallbackInfo& info) { return Napi::Boolean::New(info.Env(), !cq_); }

}  // namespace rdma
