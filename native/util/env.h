// What the addon keeps per Node.js environment. The main thread and every
// worker thread that loads the addon get their own: a JS function reference
// belongs to one environment and dies with it, so none may live in a static
// (a worker that loaded the addon and exited left the main thread's rdma_cm
// with a dangling constructor: the next incoming connection crashed it).
#pragma once
#include <napi.h>
#include <set>

namespace rdma {

class Tracked;

struct EnvData {
  Napi::FunctionReference error_class;  // RdmaError (lib/errors.ts), set by setErrorClass()
  Napi::FunctionReference cm_id;        // the CmId class, for ids that incoming connections create
  std::set<Tracked*> tracked;           // native objects holding kernel resources
};

// This environment's data, created on first use and freed with the environment.
EnvData& GetEnvData(Napi::Env env);

// A native object that holds kernel resources. When an environment is torn
// down with such objects still open (a worker terminated, or ending without
// close()), their finalizers run in no particular order, and the kernel
// refuses to destroy a CQ that QPs use, a PD with regions, and so on: the
// objects and their fds stayed allocated until the process exited. So each
// registers here, and the environment's cleanup hook (which runs before the
// finalizers) releases them in dependency order: lower ranks first.
class Tracked {
 public:
  // windows before their QP (rxe holds a QP while a type 2 window is bound
  // through it: destroying the QP first stalls ~50 s in the kernel) and
  // their region; QPs before their CQs, SRQ and PD; ...; contexts last
  enum Rank { kWindow, kQueuePair, kOnPd, kRegionOrCq, kPd, kCmId, kCmChannel, kContext };
  Tracked(const Tracked&) = delete;
  Tracked& operator=(const Tracked&) = delete;
  Rank rank() const { return rank_; }
  // Destroys the kernel objects; idempotent and free of Node-API calls
  // (none may run in a cleanup hook). The finalizer later frees the rest.
  virtual void ReleaseKernelObjects() = 0;

 protected:
  Tracked(Napi::Env env, Rank rank);
  virtual ~Tracked();

 private:
  friend void TeardownEnv(void* arg);
  EnvData* data_;
  Rank rank_;
};

}  // namespace rdma
