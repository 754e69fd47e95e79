#!/usr/bin/env bash
# Makes a private CA and a server certificate signed by it, for keyservice's [tls].
#
#   scripts/tls-certificates.sh DIR [NAME...]
#
# writes DIR/ca.crt and DIR/ca.key (the CA: keep its key offline), and DIR/server.crt
# and DIR/server.key for the names given (default: localhost and 127.0.0.1). Point
# tls.cert_file and tls.key_file at the server files, and clients (keyservice-cli
# --ca-file, the Rust client's ca_certificates_pem) at ca.crt. A self-signed certificate
# used as its own CA does not work: rustls refuses a CA certificate as a server's.
set -euo pipefail
dir=${1:?usage: tls-certificates.sh DIR [NAME...]}
shift
if [ $# -eq 0 ]; then names=(localhost 127.0.0.1); else names=("$@"); fi
mkdir -p "$dir"
cd "$dir"
umask 077
san=""
for name in "${names[@]}"; do
  if [[ $name =~ ^[0-9.]+$ || $name == *:* ]]; then san+="IP:$name,"; else san+="DNS:$name,"; fi
done
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
  -subj "/CN=keyservice private CA" -keyout ca.key -out ca.crt 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
  -subj "/CN=${names[0]}" -keyout server.key -out server.csr 2>/dev/null
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n' \
  "${san%,}" > server.ext
openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 825 \
  -extfile server.ext -out server.crt 2>/dev/null
rm -f server.csr server.ext ca.srl
chmod 644 ca.crt server.crt
echo "wrote $dir/ca.crt, $dir/server.crt and their keys"
