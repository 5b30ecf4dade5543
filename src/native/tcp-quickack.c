/*
 * setQuickAck(fd): sets TCP_QUICKACK on a socket, which Node has no API for.
 *
 * Linux delays the ACK of data it received (up to 40 ms) once a connection
 * looks interactive. A client that leaves Nagle's algorithm on (Python's
 * imaplib, many libraries) then holds back the CRLF after an APPEND literal
 * until that ACK comes: every APPEND waits 40 ms. Dovecot sets TCP_QUICKACK
 * after each flush of its output for this reason; the gateway does the same.
 * The kernel clears the flag again as it processes the connection, so it is
 * set after every write.
 */
#include <node_api.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

static napi_value set_quick_ack(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  int32_t fd = -1;
  napi_value result;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc < 1 ||
      napi_get_value_int32(env, argv[0], &fd) != napi_ok || fd < 0) {
    napi_throw_type_error(env, NULL, "fd must be a non-negative integer");
    return NULL;
  }
  int on = 1;
  int ok = setsockopt(fd, IPPROTO_TCP, TCP_QUICKACK, &on, sizeof on) == 0;
  napi_get_boolean(env, ok, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_value fn;
  if (napi_create_function(env, "setQuickAck", NAPI_AUTO_LENGTH, set_quick_ack, NULL, &fn) != napi_ok) return NULL;
  if (napi_set_named_property(env, exports, "setQuickAck", fn) != napi_ok) return NULL;
  return exports;
}
