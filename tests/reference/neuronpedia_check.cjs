// What Neuronpedia's graph upload (apps/webapp/app/api/graph/save-to-db/route.ts, commit ebb8426) checks
// before it looks at its database: its graph-schema.json through Ajv 8 exactly as the route calls it, then
// the scan and slug charset. Usage: node neuronpedia_check.cjs SCHEMA FILE... ; prints one JSON report per
// file, a list. NODE_PATH must hold ajv (viewer.py's npm folder does).
const Ajv = require('ajv')
const fs = require('fs')
const schema = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'))
const validate = new Ajv({ allErrors: true, strict: false }).compile(schema)
const reports = process.argv.slice(3).map((file) => {
  const raw = fs.readFileSync(file)
  const graph = JSON.parse(raw.toString('utf8'))
  const valid = validate(graph)
  const bad = /[^a-zA-Z0-9_.-]/
  const meta = graph.metadata || {}
  return {
    file,
    valid,
    errors: valid ? [] : validate.errors.map((e) => `${e.instancePath || 'root'}: ${e.message}`),
    charset_ok: !(bad.test(meta.scan) || bad.test(meta.slug)),
    size_ok: raw.length >= 1024 && raw.length <= 100 * 1024 * 1024, // signed-put/route.ts, MAX_GRAPH_UPLOAD_SIZE_BYTES
  }
})
console.log(JSON.stringify(reports))
