// Completions from the OpenAI-compatible API by a fixed number of concurrent clients (a
// closed model: each waits for its answer, as chat clients do). Every answer is priced and
// recorded (InferenceServed) before it returns, so this measures the whole recorded path.
//
// Env: INFER_URL, API_KEY, MODEL; VUS (default 4), DURATION (default 30s), MAX_TOKENS (16).
import http from 'k6/http';
import { check } from 'k6';

export const options = {
  scenarios: {
    completions: { executor: 'constant-vus', vus: Number(__ENV.VUS || 4), duration: __ENV.DURATION || '30s' },
  },
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{scenario:completions}': ['p(95)<2000'],
    checks: ['rate>0.99'],
  },
  summaryTrendStats: ['min', 'med', 'avg', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const prompts = ['The best way to', 'Once upon a time', 'A computer is', 'Never trust'];

export default function () {
  const body = JSON.stringify({
    model: __ENV.MODEL,
    prompt: prompts[__ITER % prompts.length],
    max_tokens: Number(__ENV.MAX_TOKENS || 16),
    temperature: 0.7,
  });
  const response = http.post(`${__ENV.INFER_URL}/v1/completions`, body, {
    headers: { authorization: `Bearer ${__ENV.API_KEY}`, 'content-type': 'application/json' },
    tags: { name: 'POST /v1/completions' },
  });
  check(response, {
    'answered (200)': (r) => r.status === 200,
    'recorded with its fee': (r) => r.status === 200 && r.json('provenant.fee.minor_units') !== undefined,
  });
}
