// Contributions submitted to one Datanet at a constant arrival rate (k6's open model: a slow
// server does not slow the offered load, it piles up VUs and shows in the latencies).
//
// Env: INGEST_URL, API_KEY (a contributor's key), DATANET_ID; RATE (per second, default 50),
// DURATION (default 30s).
import http from 'k6/http';
import { check } from 'k6';
import exec from 'k6/execution';

const rate = Number(__ENV.RATE || 50);

export const options = {
  scenarios: {
    contributions: {
      executor: 'constant-arrival-rate',
      rate,
      timeUnit: '1s',
      duration: __ENV.DURATION || '30s',
      preAllocatedVUs: 20,
      maxVUs: 200,
    },
  },
  // Acceptance is asynchronous (202, then a verdict over JetStream), so these bound the
  // synchronous part only: validation of the request, the content-addressed write, the append.
  thresholds: {
    http_req_failed: ['rate<0.01'],
    'http_req_duration{scenario:contributions}': ['p(95)<250', 'p(99)<1000'],
    checks: ['rate>0.99'],
    dropped_iterations: ['count<' + Math.ceil(rate)],
  },
  summaryTrendStats: ['min', 'med', 'avg', 'p(90)', 'p(95)', 'p(99)', 'max'],
};

const words = ('river garden lantern harvest meadow quiet thunder silver morning window ' +
  'orchard pebble compass violin harbour ember willow canyon ledger sparrow').split(' ');

// A text no other iteration sends: exact duplicates are refused by design.
function record() {
  const n = exec.scenario.iterationInTest;
  const picked = [];
  for (let i = 0, x = n + 7; i < 12; i++, x = Math.floor(x / 3) + i * 13) picked.push(words[x % words.length]);
  return `Load record ${n}: ${picked.join(' ')}.`;
}

export default function () {
  const response = http.post(`${__ENV.INGEST_URL}/v1/datanets/${__ENV.DATANET_ID}/contributions`, record(), {
    headers: { authorization: `Bearer ${__ENV.API_KEY}`, 'content-type': 'text/plain' },
    tags: { name: 'POST /v1/datanets/{datanet_id}/contributions' },
  });
  check(response, { 'accepted for validation (202)': (r) => r.status === 202 });
}
