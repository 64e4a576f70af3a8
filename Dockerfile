# The managed plugin's rootfs as an image, built offline (FROM scratch):
#   scripts/build-rootfs.sh bin/qsfs plugin-build
#   docker build -t qsfs-rootfs -f Dockerfile plugin-build
# `make plugin-docker` does this and exports the image into plugin-build/rootfs.
FROM scratch
COPY rootfs/ /
ENTRYPOINT ["/qsfs", "plugin"]
