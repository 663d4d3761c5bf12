// What the addon keeps per Node.js environment. The main thread and every
// worker thread that loads the addon get their own: a JS function reference
// belongs to one environment and dies with it, so none may live in a static
// (a worker that loaded the addon and exited left the main thread's rdma_cm
// with a dangling constructor: the next incoming connection crashed it).
#pragma once
#include <napi.h>

namespace rdma {

struct EnvData {
  Napi::FunctionReference error_class;  // RdmaError (lib/errors.ts), set by setErrorClass()
  Napi::FunctionReference cm_id;        // the CmId class, for ids that incoming connections create
};

// This environment's data, created on first use and freed with the environment.
EnvData& GetEnvData(Napi::Env env);

}  // namespace rdma
