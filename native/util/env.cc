#include "util/env.h"

namespace rdma {

EnvData& GetEnvData(Napi::Env env) {
  auto* data = env.GetInstanceData<EnvData>();
  if (!data) {
    data = new EnvData();
    env.SetInstanceData(data);  // deleted when the environment is torn down
  }
  return *data;
}

}  // namespace rdma
