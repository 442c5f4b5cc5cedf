#!/bin/sh
# azd postprovision hook (also runnable by hand with the same variables set):
#   1. prints the URLs a hospital registers: portal, Entra redirect URIs, EHR redirect URIs, JWKS URL,
#      Graph notification URL;
#   2. seeds the Key Vault secrets the connector generates itself when they are missing (HMAC key,
#      Graph clientState, signing key, Graph notification certificate). Existing secrets are never
#      replaced; the Entra client secret comes from the app registration (docs/setup.md, step 2).
# Needs: PUBLIC_BASE_URL and AZURE_KEY_VAULT_NAME (azd sets them from the deployment outputs), the
# Azure CLI signed in as the deploying principal (Key Vault Secrets Officer), and openssl.
set -eu

base=${PUBLIC_BASE_URL:?PUBLIC_BASE_URL is not set: run through azd (azd provision) or export it}
base=${base%/}
retries=${SEED_RETRIES:-20}
retry_seconds=${SEED_RETRY_SECONDS:-15}

cat <<URLS

Teams EHR connector deployed: ${base}

  Configuration portal (admins, approvers)   ${base}/api/portal

  Entra app registration, platform "Web", redirect URIs:
                                             ${base}/api/portal/signin/callback
                                             ${base}/api/launch/signin/callback
  EHR app registrations (provider, patient), redirect URIs:
                                             ${base}/api/launch/callback
                                             ${base}/api/portal/ehr/callback
  EHR app registrations, JWK Set URL:        ${base}/api/.well-known/jwks.json
  Graph change notifications (no action):    ${base}/api/graph/notifications

URLS

vault=${AZURE_KEY_VAULT_NAME:-}
if [ -z "$vault" ]; then
  echo "AZURE_KEY_VAULT_NAME is not set: secrets not seeded (docs/setup.md, 'Secrets')." >&2
  exit 1
fi
for tool in az openssl; do
  if ! command -v "$tool" >/dev/null 2>&1; then
    echo "$tool not found: install it, then run infra/hooks/postprovision.sh again to seed Key Vault secrets." >&2
    exit 1
  fi
done

# The deployer's Key Vault role assignment can take a few minutes to apply after provisioning.
attempt=1
until existing=$(az keyvault secret list --vault-name "$vault" --query "[].name" --output tsv 2>/dev/null); do
  if [ "$attempt" -ge "$retries" ]; then
    echo "Cannot list the secrets of Key Vault $vault (signed in to az? Key Vault Secrets Officer?)." >&2
    exit 1
  fi
  attempt=$((attempt + 1))
  sleep "$retry_seconds"
done

umask 077
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT INT TERM

has_secret() {
  printf '%s\n' "$existing" | grep -qx "$1"
}

generate() {
  case $1 in
    connector-secret | graph-client-state)
      printf '%s' "$(openssl rand -hex 32)" >"$work/$1"
      ;;
    sealing-keys)
      # 32 random bytes, base64url without padding (SEALING_KEYS: the active key first, a retiring one after a comma)
      printf '%s' "$(openssl rand -base64 32 | tr '+/' '-_' | tr -d '=\n')" >"$work/$1"
      ;;
    signing-keys)
      openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$work/$1" 2>/dev/null
      ;;
    graph-encryption-certificate)
      openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 730 \
        -subj "/CN=teams-ehr-connector-notifications" \
        -keyout "$work/notifications-key.pem" -out "$work/notifications-cert.pem" 2>/dev/null
      cat "$work/notifications-cert.pem" "$work/notifications-key.pem" >"$work/$1"
      ;;
  esac
}

echo "Key Vault $vault:"
for name in connector-secret sealing-keys graph-client-state signing-keys graph-encryption-certificate; do
  if has_secret "$name"; then
    echo "  $name: present, kept"
    continue
  fi
  generate "$name"
  az keyvault secret set --vault-name "$vault" --name "$name" --file "$work/$name" --encoding utf-8 --output none
  rm -f "$work/$name"
  echo "  $name: generated and stored"
done
if has_secret entra-client-secret; then
  echo "  entra-client-secret: present, kept"
else
  echo "  entra-client-secret: missing. After registering the Entra app (docs/setup.md, step 2):"
  echo "    az keyvault secret set --vault-name $vault --name entra-client-secret --file <file with the secret>"
  echo "    azd env set ENTRA_CLIENT_ID <application id> && azd provision"
fi
