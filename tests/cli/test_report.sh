#!/bin/bash
# tests/cli/test_report.sh - `dpctl report` rendered by a real browser:
# headless Chromium takes a screenshot of the page made from the run-dir
# fixture (it must be non-blank and show the timeline colours) and dumps the
# DOM (every section must be there).  Skips where Chromium (Debian package
# `chromium`) or python3 is missing or cannot start.
set -u
cd "$(dirname "$0")/../.."
. tests/cli/tap.sh
DPCTL=${DPCTL:-build/dpctl}
plan 5
chrome=$(command -v chromium || command -v chromium-browser || true)
if [ -z "$chrome" ] || ! command -v python3 >/dev/null; then
	for i in 1 2 3 4 5; do skip_test "report: needs chromium and python3"; done
	exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cp -r tests/fixtures/report/run1 "$tmp/run"
"$DPCTL" report "$tmp/run" >/dev/null
is "dpctl report writes RUN_DIR/report.html" "$?" 0
run_chrome() {
	# a private profile; no sandbox (tests may run as root); bounded
	HOME=$tmp timeout 120 "$chrome" --headless --no-sandbox --disable-gpu --no-first-run \
		--disable-extensions --disable-dev-shm-usage --user-data-dir="$tmp/profile" \
		--window-size=1000,1400 "$@" "file://$tmp/run/report.html" 2>/dev/null
}
run_chrome --screenshot="$tmp/shot.png" >/dev/null
if [ ! -s "$tmp/shot.png" ]; then
	for i in 2 3 4 5; do skip_test "report: chromium cannot start here"; done
	exit 0
fi
# Decode the PNG (8-bit RGB/RGBA, not interlaced): pixels that are not
# white/near-white, and pixels of the timeline's forward colour #4a7fd4.
stats=$(python3 - "$tmp/shot.png" <<'EOP'
import struct, sys, zlib
data = open(sys.argv[1], 'rb').read()
assert data[:8] == b'\x89PNG\r\n\x1a\n'
pos, idat, w = 8, b'', 0
while pos < len(data):
    n, t = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + n]
    if t == b'IHDR':
        w, h, depth, ctype = struct.unpack('>IIBB', body[:10])
        bpp = {2: 3, 6: 4}[ctype]
    elif t == b'IDAT':
        idat += body
    pos += 12 + n
raw, stride = zlib.decompress(idat), w * bpp
prev, ink, blue, i = bytearray(stride), 0, 0, 0
for y in range(h):
    f, line = raw[i], bytearray(raw[i + 1:i + 1 + stride])
    i += 1 + stride
    for x in range(stride):
        a = line[x - bpp] if x >= bpp else 0
        b, c = prev[x], prev[x - bpp] if x >= bpp else 0
        if f == 1: line[x] = (line[x] + a) & 255
        elif f == 2: line[x] = (line[x] + b) & 255
        elif f == 3: line[x] = (line[x] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    for x in range(0, stride, bpp):
        r, g, bl = line[x:x + 3]
        if r < 235 or g < 235 or bl < 235: ink += 1
        if abs(r - 0x4a) < 6 and abs(g - 0x7f) < 6 and abs(bl - 0xd4) < 6: blue += 1
    prev = line
print(w, h, ink, blue)
EOP
)
read -r w h ink blue <<<"$stats"
is "the screenshot has the window's size" "$w x $h" "1000 x 1400"
ok "the screenshot is not blank (${ink:-0} inked pixels)" test "${ink:-0}" -gt 20000
ok "the timeline is drawn (${blue:-0} forward-coloured pixels)" test "${blue:-0}" -gt 500
dom=$(run_chrome --dump-dom)
ids=$(grep -o 'id="[a-z0-9-]*"' <<<"$dom" | sort -u | tr -d '\n')
is "the rendered DOM has every section" "$ids" \
	'id="a2a"id="a2a-svg"id="bubble"id="bubble-svg"id="health"id="health-table"id="loss"id="loss-svg"id="outcome"id="root-cause"id="summary"id="timeline"id="timeline-svg"'
done_testing
