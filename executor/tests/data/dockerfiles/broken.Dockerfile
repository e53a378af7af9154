FROM busybox AS base
COPY --chwon=1000 a /a
RUNN echo hi
FROM base AS base
WORKDIR ${DIR:?DIR must be set}
