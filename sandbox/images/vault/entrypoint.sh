#!/bin/sh
# Dev server in memory: seed the KV v2 secrets every start, then mark ready
# (the healthcheck waits for /tmp/seeded so nobody reads an empty Vault).
set -eu
: "${VAULT_DEV_ROOT_TOKEN_ID:?VAULT_DEV_ROOT_TOKEN_ID is not set}"
rm -f /tmp/seeded
bao server -dev -dev-root-token-id="$VAULT_DEV_ROOT_TOKEN_ID" -dev-listen-address=0.0.0.0:8200 -log-level=warn &
pid=$!
export BAO_ADDR=http://127.0.0.1:8200 BAO_TOKEN="$VAULT_DEV_ROOT_TOKEN_ID"
i=0
until bao status >/dev/null 2>&1; do
  i=$((i + 1)); [ $i -gt 100 ] && { echo "openbao did not come up" >&2; exit 1; }
  sleep 0.1
done
put() { path=$1; shift; bao kv put -mount=secret "$path" "$@" >/dev/null; }
put bizosaas/shared api_token="$BIZOSAAS_API_TOKEN"
put bizosaas/brain-api OPENROUTER_API_KEY="$OPENROUTER_API_KEY" OPENAI_API_KEY="$OPENAI_API_KEY" ANTHROPIC_API_KEY="$ANTHROPIC_API_KEY"
put bizosaas/ai-agents OPENROUTER_API_KEY="$OPENROUTER_API_KEY" OPENAI_API_KEY="$OPENAI_API_KEY" ANTHROPIC_API_KEY="$ANTHROPIC_API_KEY"
put bizosaas/coreldove-backend STRIPE_SECRET_KEY="$STRIPE_SECRET_KEY" PAYPAL_CLIENT_ID="$PAYPAL_CLIENT_ID" PAYPAL_CLIENT_SECRET="$PAYPAL_CLIENT_SECRET"
put bizosaas/amazon-sourcing AMAZON_ACCESS_KEY="$AMAZON_ACCESS_KEY" AMAZON_SECRET_KEY="$AMAZON_SECRET_KEY"
for s in wagtail-cms django-crm business-directory-api saleor-api; do put "bizosaas/$s" service="$s"; done
touch /tmp/seeded
echo "openbao dev server ready; secrets seeded"
wait $pid
