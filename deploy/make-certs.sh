#!/bin/sh
# A private CA and one certificate for the cluster's nodes (mutual TLS):
#   sh deploy/make-certs.sh OUTDIR IP_OR_NAME [IP_OR_NAME ...]
# writes OUTDIR/ca.pem, OUTDIR/ca-key.pem (keep it offline) and
# OUTDIR/node.pem (certificate + key, mode 0600) valid for those addresses.
# Then: dcenter --tls-cert node.pem --tls-key node.pem --tls-ca-file ca.pem --require-client-cert
#       dworker tls://CENTER:8787 --tls-cert node.pem --tls-key node.pem --tls-ca-file ca.pem
set -eu
out=${1:?usage: make-certs.sh OUTDIR IP_OR_NAME...}
shift
[ $# -ge 1 ] || { echo "usage: make-certs.sh OUTDIR IP_OR_NAME..." >&2; exit 2; }
mkdir -p "$out"
umask 077
san=""
for name in "$@"; do
    case "$name" in
        *[!0-9.:a-fA-F]*) san="$san,DNS:$name" ;;
        *) san="$san,IP:$name" ;;
    esac
done
san=${san#,}
openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj "/CN=distributed CA" \
    -keyout "$out/ca-key.pem" -out "$out/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=distributed node" \
    -keyout "$out/node-key.pem" -out "$out/node.csr" 2>/dev/null
printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$san" > "$out/node.ext"
openssl x509 -req -in "$out/node.csr" -CA "$out/ca.pem" -CAkey "$out/ca-key.pem" \
    -CAcreateserial -days 825 -extfile "$out/node.ext" -out "$out/node-cert.pem" 2>/dev/null
cat "$out/node-cert.pem" "$out/node-key.pem" > "$out/node.pem"
rm -f "$out/node.csr" "$out/node.ext" "$out/node-cert.pem" "$out/node-key.pem" "$out/ca.srl"
chmod 644 "$out/ca.pem"
echo "wrote $out/ca.pem $out/ca-key.pem $out/node.pem for $*"
