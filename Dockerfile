# Both binaries, static, on a minimal non-root base.
#   docker build -t socketrooms .          (or: make image)
#   docker run socketrooms /membership-server --help
#   docker run socketrooms /gateway --help
# The build stage runs exactly scripts/build-static.sh, which make test runs too.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN ./scripts/build-static.sh /out

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/membership-server /out/gateway /
USER nonroot:nonroot
EXPOSE 50051 50052 50061 50062 8080
ENTRYPOINT []
CMD ["/membership-server"]
