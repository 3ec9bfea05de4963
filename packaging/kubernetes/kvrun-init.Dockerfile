# syntax=docker/dockerfile:1
#
# The init image of deployment-init-copy.yaml: kvrun's static binary and a CA
# bundle, plus busybox for the `cp` that puts them into the pod's emptyDir. The
# kvrun image itself (packaging/docker/Dockerfile) is FROM scratch and has no
# cp. From the repository root, after building that image as `kvrun`:
#
#   docker build -f packaging/kubernetes/kvrun-init.Dockerfile -t kvrun-init .

ARG KVRUN_IMAGE=kvrun
FROM ${KVRUN_IMAGE} AS kvrun

# musl: busybox's static build, no libc needed from anywhere else.
FROM busybox:1.37.0-musl
COPY --from=kvrun /usr/local/bin/kvrun /usr/local/bin/kvrun
COPY --from=kvrun /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
# The same numeric "nonroot" user as the kvrun image; an emptyDir is writable
# by any user.
USER 65532:65532
