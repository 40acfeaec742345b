# local/python:3.11-slim: Debian bookworm's python3 (3.11) on the debootstrapped local/debian
# image, standing in for the official python:3.11-slim that cannot be pulled here. Built by
# .ci/docker in a temporary context holding certs/ (this machine's CA certificates, copied at
# build time so pip and apt work through its HTTPS proxy; they are never committed).
FROM local/debian:bookworm
COPY certs/ /usr/local/share/ca-certificates/
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3 python3-venv python3-pip \
    && update-ca-certificates \
    && ln -sf /usr/bin/python3 /usr/local/bin/python \
    && printf '[global]\ncert = /etc/ssl/certs/ca-certificates.crt\nbreak-system-packages = true\n' > /etc/pip.conf \
    && rm -rf /var/lib/apt/lists/*
ENV LANG=C.UTF-8
CMD ["python3"]
