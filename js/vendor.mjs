// Runs after `npm run build` (npm's postbuild hook). Copies the two third-party scripts that an offline
// exported notebook needs into the Python package, so `heatwidget export` never fetches anything at export
// time or view time:
//   require.js                        (npm `requirejs`)                      : the AMD loader nbconvert pages use
//   embed-amd.js (+ its *.woff2 fonts) (npm `@jupyter-widgets/html-manager`) : renders saved widget state
// The versions are pinned in package.json (exact) and package-lock.json (integrity hashes). The widget front
// ends (anywidget, bqplot, bqscales) are not copied here: they come from the installed Python packages.
import { copyFileSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from "node:fs";
import { createRequire } from "node:module";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const require = createRequire(import.meta.url);
const out = join(here, "..", "heatwidget", "static", "vendor");
mkdirSync(out, { recursive: true });

const files = [
  ["requirejs", "require.js", "require.js"],
  ["@jupyter-widgets/html-manager", "dist/embed-amd.js", "embed-amd.js"],
];
const versions = {};
for (const [pkg, path, name] of files) {
  const pkgJson = require.resolve(`${pkg}/package.json`);
  copyFileSync(join(dirname(pkgJson), path), join(out, name));
  versions[name] = { package: pkg, version: JSON.parse(readFileSync(pkgJson, "utf8")).version };
}
// The html-manager's Font Awesome fonts (icons on ipywidgets buttons): the exported page inlines the woff2 files
// (heatwidget/export.py) instead of fetching them from next to the script, which an inlined script does not have.
const dist = join(dirname(require.resolve("@jupyter-widgets/html-manager/package.json")), "dist");
for (const f of readdirSync(dist).filter((f) => f.endsWith(".woff2"))) copyFileSync(join(dist, f), join(out, f));
// Recorded so the exported page (and a bug report) can say which html-manager rendered it.
writeFileSync(join(out, "versions.json"), JSON.stringify(versions, null, 2) + "\n");
