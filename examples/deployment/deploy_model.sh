#!/usr/bin/env bash
# Deploy a model only if it verifies against the deployment's trust policy.
#
#   examples/deployment/deploy_model.sh MODEL_DIR NAME POLICY DEST_DIR [AUDIT_LOG]
#
# NAME is the model name the seal must carry: the signer chooses the name inside the seal and the
# policy's rules are picked by it, so the deployment says which model it expects.
# The policy (pinned in the deployment's own repository, out of reach of whoever can write the
# model store) says which keys may sign which model names, how many must agree, and which
# provenance claims (builder, source repository, dataset digests) must hold. Any failure: the
# model is not copied, the reason is printed, the exit code is 1. The copy is verified again
# where it lands (a private temporary directory renamed into place), so what runs is what was
# checked.
set -euo pipefail

if [ $# -lt 4 ]; then
    echo "usage: $0 MODEL_DIR NAME POLICY DEST_DIR [AUDIT_LOG]" >&2
    exit 2
fi
model=$1 name=$2 policy=$3 dest=$4 audit=${5:-deploy-audit.jsonl}
modelseal=${MODELSEAL:-modelseal}

refuse() {
    echo "deploy: REFUSED to deploy $model: $1" >&2
    exit 1
}

echo "deploy: verifying $model against $policy" >&2
"$modelseal" verify "$model" --name "$name" --policy "$policy" --log-json "$audit" \
    || refuse "the model does not verify against the policy (see above)"
"$modelseal" provenance verify "$model" --policy "$policy" \
    || refuse "its training provenance does not verify (see above)"

staging=$(mktemp -d "$(dirname "$dest")/.deploy-XXXXXX")
trap 'rm -rf "$staging"' EXIT
cp -a "$model/." "$staging/"
"$modelseal" verify "$staging" --name "$name" --policy "$policy" --log-json "$audit" --quiet \
    || refuse "the copied model changed on the way"
rm -rf "$dest.old"
if [ -e "$dest" ]; then mv "$dest" "$dest.old"; fi
mv "$staging" "$dest"
trap - EXIT
rm -rf "$dest.old"
echo "deploy: deployed $model to $dest" >&2
