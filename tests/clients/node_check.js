// node-postgres through pgmux with named queries (prepared once per connection, by name) and
// transactions; each concurrent client checks its own answers.
//
// usage: node node_check.js URL CLIENTS ROUNDS   (NODE_PATH points at the pg module)
'use strict';
const { Client } = require('pg');
const assert = require('assert');

async function worker(url, me, rounds) {
  const client = new Client({ connectionString: url });
  await client.connect();
  let checks = 0;
  try {
    for (let r = 0; r < rounds; r++) {
      let res = await client.query({
        name: 'mul',
        text: 'SELECT $1::int * 1000 + $2::int AS v',
        values: [me, r],
      });
      assert.strictEqual(res.rows[0].v, me * 1000 + r);
      res = await client.query({
        name: `own-${me % 5}`,
        text: `SELECT $1::text || '-${me % 5}' AS v`,
        values: [`c${me}`],
      });
      assert.strictEqual(res.rows[0].v, `c${me}-${me % 5}`);
      await client.query('BEGIN');
      res = await client.query({ name: 'mul', text: 'SELECT $1::int * 1000 + $2::int AS v', values: [me, -r] });
      await client.query('COMMIT');
      assert.strictEqual(res.rows[0].v, me * 1000 - r);
      checks += 3;
    }
  } finally {
    await client.end();
  }
  return checks;
}

async function main() {
  const [url, clients, rounds] = [process.argv[2], Number(process.argv[3]), Number(process.argv[4])];
  const workers = [];
  for (let i = 0; i < clients; i++) workers.push(worker(url, i, rounds));
  const totals = await Promise.all(workers);
  console.log(`node-postgres: ${totals.reduce((a, b) => a + b, 0)} checks passed`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
