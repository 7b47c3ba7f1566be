// JavaScript twins of benchmarks/fixture_functions/bench_tools.py, served by the Node backend.
// Its execute route passes the payload object as the first argument.

/** Add two integers (a trivial sync function with arguments). */
export function add(payload) {
  return payload.a + payload.b;
}

/** Answer pong (a trivial sync function). */
export function ping() {
  return "pong";
}

/** Answer pong (a trivial async function). */
export async function aping() {
  return "pong";
}
