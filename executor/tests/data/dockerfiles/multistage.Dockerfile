# syntax=docker/dockerfile:1
ARG BASE=busybox
ARG VERSION=1.36

FROM ${BASE}:${VERSION} AS build
ARG VERSION
ENV APP_HOME=/src/app
WORKDIR $APP_HOME
COPY --chown=1000:1000 . .
RUN --mount=type=cache,target=/root/.cache \
    echo "building ${VERSION}" > version.txt

FROM scratch AS unused
COPY --from=build /src/app/version.txt /

FROM busybox:${VERSION}
ARG VERSION
LABEL org.opencontainers.image.version=$VERSION
COPY --from=build ${APP_HOME:-/src/app}/version.txt /version.txt
USER 1000:1000
ENTRYPOINT ["/bin/cat"]
CMD ["/version.txt"]
