// Device enumeration (ibv_get_device_list) without opening anything.
#pragma once
#include <napi.h>

namespace rdma {
void InitDevice(Napi::Env env, Napi::Object exports);
}
