#!/usr/bin/env bash
# The whole modelseal story in one minute: seal a model, verify it, tamper with it, see it refused.
set -euo pipefail
here=$(cd "$(dirname "$0")/.." && pwd)
work="$here/demo"
rm -rf "$work" && mkdir -p "$work"
cd "$work"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "generate a small model (a directory with weights and a config)"
python3 - <<'PY'
import json, os, random
os.makedirs("model/weights", exist_ok=True)
rng = random.Random(42)
for i in range(3):
    with open(f"model/weights/layer{i}.bin", "wb") as f:
        f.write(rng.randbytes(256 * 1024))
with open("model/config.json", "w") as f:
    json.dump({"layers": 3, "activation": "relu"}, f)
PY
ls -R model

step "create a signing key pair (trainer.key stays secret, trainer.pub ships with the app)"
modelseal keygen --out trainer

step "seal the model (writes model/model.sig, an OpenSSF Model Signing v1.0 bundle)"
modelseal seal model --key trainer.key

step "verify it before use"
modelseal verify model --public-key trainer.pub --log-json audit.jsonl

step "an attacker flips one byte of a weight file"
python3 - <<'PY'
with open("model/weights/layer1.bin", "r+b") as f:
    f.seek(1000)
    b = f.read(1)
    f.seek(1000)
    f.write(bytes([b[0] ^ 0x01]))
PY

step "verify again: refused, with the exact file and digests"
set +e
modelseal verify model --public-key trainer.pub --log-json audit.jsonl
code=$?
set -e
echo "exit code: $code (1 = verification failed)"

step "the audit log has one JSON line per verification"
cat audit.jsonl

if [ "$code" -ne 1 ]; then
    echo "demo: the tampered model was NOT refused" >&2
    exit 1
fi
printf '\n\033[1mdemo ok:\033[0m the honest model verified, the tampered one was refused.\n'
