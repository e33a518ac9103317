#!/usr/bin/env bash
# gen-certs.sh DIR [NAME...]: makes a CA and one certificate for a local Sluice cluster, for --tls on.
#
# Writes DIR/ca.pem (the CA every process trusts: --tls-ca-file, and SLUICE_CA_FILE for the CLI), and
# DIR/node.pem with DIR/node.key (the certificate every process presents: --tls-cert-file, --tls-key-file).
# The certificate is valid for 127.0.0.1, ::1 and localhost, plus every NAME given (host names or IP
# addresses of the machines the processes run on). Keys are EC P-256, mode 0600. Needs openssl.
#
# For a real deployment use your own CA (cert-manager on Kubernetes) and one certificate per host; the
# flags are the same.
set -euo pipefail

dir="${1:?usage: scripts/gen-certs.sh DIR [NAME...]}"
shift
command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is missing (apt-get install openssl)" >&2; exit 1; }
mkdir -p "$dir"
umask 077

# Validity in days: long enough for a local cluster, short enough not to outlive a laptop.
readonly DAYS=365

names="DNS:localhost,IP:127.0.0.1,IP:::1"
for name in "$@"; do
  if [[ "$name" =~ ^[0-9.]+$ || "$name" == *:* ]]; then names="$names,IP:$name"; else names="$names,DNS:$name"; fi
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days "$DAYS" \
  -subj "/CN=Sluice local CA" -keyout "$dir/ca.key" -out "$dir/ca.pem" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=sluice" \
  -keyout "$dir/node.key" -out "$dir/node.csr" 2>/dev/null
openssl x509 -req -in "$dir/node.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days "$DAYS" \
  -out "$dir/node.pem" \
  -extfile <(printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n' "$names") \
  2>/dev/null
rm -f "$dir/node.csr" "$dir/ca.srl"
echo "$dir/ca.pem (CA), $dir/node.pem + $dir/node.key (certificate for $names)"
