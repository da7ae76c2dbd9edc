"""Make `asv publish` output render offline, from disk, in any browser.

asv's published ``index.html`` loads jQuery, flot, bootstrap, stupidtable and md5 from
public CDNs, and reads its data (``info.json``, ``index.json``, ``graphs/**.json``) with
XHR, which browsers refuse for ``file://`` pages. This script copies the published HTML
folder to an output folder (``reports/asv/`` by default) and there:

1. replaces every remote ``<script src>`` / ``<link href>`` by a local copy in ``vendor/``;
   the copies come from the npm registry (``npm pack``, once, at set-up time) and are
   cached in ``.asv/vendor/`` (git-ignored), so later runs need no network at all;
2. writes ``asv_offline_data.js``: every JSON file of the published folder embedded in
   one script, plus a jQuery ajax transport that answers asv's requests from it, so the
   page works from ``file://`` and also when served over HTTP.

A remote reference this script does not know (a newer asv adding a library) is an error
naming it, never a page that silently loads from the network.

Usage: python scripts/asv_offline.py [--html .asv/html] [--out reports/asv]
                                     [--vendor-cache .asv/vendor]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

__all__ = ["VENDOR", "ensure_vendor", "rewrite_html", "write_offline_data", "make_offline", "main"]

# npm package spec -> {file inside the package tarball: local name under vendor/}.
# Versions are the ones asv 0.6's index.html asks for (stupid-table-plugin 1.0.1 is not
# on npm; 1.1.3 has the same jQuery API).
VENDOR: dict[str, dict[str, str]] = {
    "jquery@3.3.1": {"package/dist/jquery.min.js": "jquery.min.js"},
    "flot@0.8.3": {
        "package/jquery.flot.js": "jquery.flot.js",
        "package/jquery.flot.time.js": "jquery.flot.time.js",
        "package/jquery.flot.selection.js": "jquery.flot.selection.js",
        "package/jquery.flot.categories.js": "jquery.flot.categories.js",
    },
    "flot-orderbars@1.0.0": {"package/js/jquery.flot.orderBars.js": "jquery.flot.orderBars.js"},
    "stupid-table-plugin@1.1.3": {"package/stupidtable.min.js": "stupidtable.min.js"},
    "blueimp-md5@2.19.0": {"package/js/md5.min.js": "md5.min.js"},
    "bootstrap@3.1.1": {
        "package/dist/js/bootstrap.min.js": "bootstrap/js/bootstrap.min.js",
        "package/dist/css/bootstrap.min.css": "bootstrap/css/bootstrap.min.css",
        # bootstrap.min.css refers to ../fonts/glyphicons-halflings-regular.*
        "package/dist/fonts/glyphicons-halflings-regular.eot": "bootstrap/fonts/glyphicons-halflings-regular.eot",
        "package/dist/fonts/glyphicons-halflings-regular.svg": "bootstrap/fonts/glyphicons-halflings-regular.svg",
        "package/dist/fonts/glyphicons-halflings-regular.ttf": "bootstrap/fonts/glyphicons-halflings-regular.ttf",
        "package/dist/fonts/glyphicons-halflings-regular.woff": "bootstrap/fonts/glyphicons-halflings-regular.woff",
    },
}

# Basename of a remote URL in asv's index.html -> local file under vendor/.
_REMOTE_TO_LOCAL: dict[str, str] = {
    "jquery-3.3.1.min.js": "jquery.min.js",
    "jquery.flot.min.js": "jquery.flot.js",
    "jquery.flot.time.min.js": "jquery.flot.time.js",
    "jquery.flot.selection.min.js": "jquery.flot.selection.js",
    "jquery.flot.categories.min.js": "jquery.flot.categories.js",
    "jquery.flot.orderBars.js": "jquery.flot.orderBars.js",
    "stupidtable.min.js": "stupidtable.min.js",
    "md5.min.js": "md5.min.js",
    "bootstrap.min.js": "bootstrap/js/bootstrap.min.js",
    "bootstrap.min.css": "bootstrap/css/bootstrap.min.css",
}

_TAG = re.compile(r"<(script|link)\b[^>]*>", re.IGNORECASE | re.DOTALL)
_REMOTE_ATTR = re.compile(r'\b(src|href)="((?:[a-zA-Z][a-zA-Z0-9+.-]*:)?//[^"]*)"')
_DROP_ATTRS = re.compile(r'\s+(integrity|crossorigin|referrerpolicy)(="[^"]*")?', re.IGNORECASE)
_OFFLINE_SCRIPT = '<script type="text/javascript" src="asv_offline_data.js"></script>'


def ensure_vendor(cache: Path) -> Path:
    """Fill ``cache`` with the vendored files (``npm pack`` only for what is missing)."""
    cache.mkdir(parents=True, exist_ok=True)
    for spec, files in VENDOR.items():
        if all((cache / local).is_file() for local in files.values()):
            continue
        npm = shutil.which("npm")
        if npm is None:
            raise SystemExit(
                f"asv_offline: {cache} lacks the files of {spec!r} and npm is not installed; "
                "install npm (apt-get install -y npm) and run this again once, online"
            )
        with tempfile.TemporaryDirectory() as tmp:
            proc = subprocess.run(
                [npm, "pack", spec, "--silent", "--pack-destination", tmp],
                capture_output=True, text=True,
            )
            tarballs = list(Path(tmp).glob("*.tgz"))
            if proc.returncode != 0 or len(tarballs) != 1:
                raise SystemExit(f"asv_offline: `npm pack {spec}` failed:\n{proc.stderr.strip()}")
            with tarfile.open(tarballs[0]) as tar:
                for member, local in files.items():
                    extracted = tar.extractfile(member)
                    if extracted is None:
                        raise SystemExit(f"asv_offline: {member} not found in npm package {spec}")
                    dest = cache / local
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(extracted.read())
    return cache


def rewrite_html(text: str, *, data_shim: bool = True) -> str:
    """Point every remote script/stylesheet of ``text`` at ``vendor/``; load the data shim.

    Raises ValueError naming a remote reference that has no local copy.
    """
    unknown: list[str] = []

    def fix_tag(match: re.Match) -> str:
        tag = match.group(0)
        attr = _REMOTE_ATTR.search(tag)
        if attr is None:
            return tag
        basename = attr.group(2).rstrip("/").rsplit("/", 1)[-1]
        local = _REMOTE_TO_LOCAL.get(basename)
        if local is None:
            unknown.append(attr.group(2))
            return tag
        tag = tag.replace(attr.group(0), f'{attr.group(1)}="vendor/{local}"')
        return _DROP_ATTRS.sub("", tag)

    out = _TAG.sub(fix_tag, text)
    if unknown:
        raise ValueError(
            "asv_offline: remote references with no local copy (add them to VENDOR and "
            f"_REMOTE_TO_LOCAL in scripts/asv_offline.py): {unknown}"
        )
    # The data shim needs jQuery (loaded above) and must be in place before asv.js
    # starts its requests on document-ready; the end of <head> satisfies both.
    if data_shim and "</head>" in out and _OFFLINE_SCRIPT not in out:
        out = out.replace("</head>", f"  {_OFFLINE_SCRIPT}\n  </head>", 1)
    return out


_SHIM = """\
/* Generated by scripts/asv_offline.py: asv's JSON data embedded, served to jQuery's
   ajax calls so the page works from file:// without a web server. */
(function ($) {
  var files = %s;
  $.ajaxTransport("+*", function (options) {
    var path = decodeURIComponent(options.url.split("?")[0].split("#")[0]).replace(/^\\.\\//, "");
    if (!Object.prototype.hasOwnProperty.call(files, path)) { return undefined; }
    return {
      send: function (headers, complete) {
        setTimeout(function () { complete(200, "success", {text: files[path]}); }, 0);
      },
      abort: function () {}
    };
  });
})(jQuery);
"""


def write_offline_data(html_dir: Path) -> int:
    """Write ``asv_offline_data.js`` into ``html_dir``; return how many files it embeds."""
    files: dict[str, str] = {}
    for path in sorted(html_dir.rglob("*.json")):
        files[path.relative_to(html_dir).as_posix()] = path.read_text(encoding="utf-8")
    # graphdisplay.js checks that the "server" is alive by fetching swallow.ico as text.
    if (html_dir / "swallow.ico").is_file():
        files["swallow.ico"] = ""
    payload = json.dumps(files, separators=(",", ":")).replace("</", "<\\/")
    (html_dir / "asv_offline_data.js").write_text(_SHIM % payload, encoding="utf-8")
    return len(files)


def make_offline(html: Path, out: Path, vendor_cache: Path) -> Path:
    """Copy ``html`` to ``out`` (replacing it) made offline; return ``out/index.html``."""
    if not (html / "index.html").is_file():
        raise SystemExit(f"asv_offline: {html}/index.html not found; run `asv publish` first")
    ensure_vendor(vendor_cache)
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".asv-offline-", dir=out.parent))
    try:
        shutil.copytree(html, staging, dirs_exist_ok=True)
        shutil.copytree(vendor_cache, staging / "vendor", dirs_exist_ok=True)
        for page in sorted(staging.glob("*.html")):
            text = page.read_text(encoding="utf-8")
            shim = page.name == "index.html"  # the only page that runs asv's scripts
            page.write_text(rewrite_html(text, data_shim=shim), encoding="utf-8")
        write_offline_data(staging)
        if out.exists():
            shutil.rmtree(out)
        os.replace(staging, out)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return out / "index.html"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--html", type=Path, default=Path(".asv/html"), help="asv publish output")
    parser.add_argument("--out", type=Path, default=Path("reports/asv"), help="offline copy")
    parser.add_argument("--vendor-cache", type=Path, default=Path(".asv/vendor"))
    args = parser.parse_args(argv)
    try:
        index = make_offline(args.html, args.out, args.vendor_cache)
    except ValueError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(index.resolve())
    return 0


if __name__ == "__main__":
    sys.exit(main())
