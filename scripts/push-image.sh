#!/usr/bin/env bash
# Build the app image from app/ once and push it: what the deploy workflow runs on a push to
# main (tag: the commit SHA), and what a person runs to publish a release by hand.
#
#   scripts/push-image.sh IMAGE TAG      e.g. scripts/push-image.sh ghcr.io/acme/payments-app 3f2c1e9
#
# A tag that the registry already holds is not built again (a re-run of the workflow deploys
# the image the first run pushed). With REGISTRY_USER and REGISTRY_PASSWORD set it logs in to
# IMAGE's registry first, the password passed on stdin. The image holds code only: no secret
# goes into a build argument or a layer (app/Dockerfile); APP_VERSION comes from the deploy.
set -euo pipefail
cd "$(dirname "$0")/.."

image=${1:-}
tag=${2:-}
if [ -z "$image" ] || [ -z "$tag" ] || [ $# -ne 2 ]; then
  echo "usage: scripts/push-image.sh IMAGE TAG (e.g. scripts/push-image.sh ghcr.io/acme/payments-app 1.4.2)" >&2
  exit 2
fi
# Registry names are lower case (GHCR refuses an owner with capitals).
image=$(printf '%s' "$image" | tr '[:upper:]' '[:lower:]')

if [ -n "${REGISTRY_USER:-}" ] && [ -n "${REGISTRY_PASSWORD:-}" ]; then
  printf '%s' "$REGISTRY_PASSWORD" | docker login "${image%%/*}" --username "$REGISTRY_USER" --password-stdin
fi
unset REGISTRY_PASSWORD

if docker manifest inspect "$image:$tag" >/dev/null 2>&1; then
  echo "$image:$tag is already in the registry: not built again"
  exit 0
fi

docker build \
  --label "org.opencontainers.image.revision=$tag" \
  --label "org.opencontainers.image.source=${SOURCE_URL:-}" \
  --tag "$image:$tag" app/
docker push "$image:$tag"
echo "pushed $image:$tag"
