// Loaded with `node --import` before the server: the Node backend calls
// https://api.openai.com directly; send those requests to the benchmark's fake upstream.
const origin = "https://api.openai.com";
const target = process.env.BENCH_OPENAI_ORIGIN;
if (!target) throw new Error("BENCH_OPENAI_ORIGIN is not set");
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init) => {
  if (typeof input === "string" && input.startsWith(origin)) {
    input = target + input.slice(origin.length);
  } else if (input instanceof URL && input.origin === origin) {
    input = new URL(input.pathname + input.search, target);
  }
  return realFetch(input, init);
};
