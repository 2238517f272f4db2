// swift-tools-version:6.1
import PackageDescription

/// swift-crypto with RSA (`_CryptoExtras`): client assertions are signed in TokendCore and verified in tests.
let crypto: [Target.Dependency] = [
    .product(name: "Crypto", package: "swift-crypto"),
    .product(name: "_CryptoExtras", package: "swift-crypto"),
]

let package = Package(
    name: "tokend",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "tokend", targets: ["tokend"]),
        .library(name: "TokendCore", targets: ["TokendCore"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
    ],
    targets: [
        // PURE: configuration, templating, OAuth 2 request/response, refresh policy. No I/O, clocks or env.
        .target(
            name: "TokendCore",
            dependencies: [
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
            ] + crypto
        ),
        // libsystemd through a shim header (sd-daemon.h).
        .systemLibrary(name: "CSystemd", pkgConfig: "libsystemd", providers: [.apt(["libsystemd-dev"])]),
        // glibc calls and structs that Swift cannot see without _GNU_SOURCE (SO_PEERCRED, SO_PEERGROUPS, syncfs,
        // malloc_trim, sched_getaffinity).
        .target(name: "CLinuxShims"),
        // ADAPTERS: token endpoint (AsyncHTTPClient), file cache, config directory, socket server (NIO), systemd,
        // the fleet's shared rows (PostgresNIO).
        .target(
            name: "TokendIO",
            dependencies: [
                "TokendCore",
                "CLinuxShims",
                "CSystemd",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // WIRING: the Dispatch scheduler queue, reload, signals, startup and shutdown order.
        .target(
            name: "TokendDaemon",
            dependencies: [
                "CLinuxShims",
                "TokendCore",
                "TokendIO",
                .product(name: "HeapModule", package: "swift-collections"),
                .product(name: "DequeModule", package: "swift-collections"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .executableTarget(
            name: "tokend",
            dependencies: [
                "TokendCore",
                "TokendIO",
                "TokendDaemon",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Hand-written fakes and a local OAuth 2 token endpoint for tests and the demo.
        .target(
            name: "TokendTestSupport",
            dependencies: [
                "TokendCore",
                "TokendIO",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ] + crypto
        ),
        .executableTarget(
            name: "tokend-example-endpoint",
            dependencies: ["TokendTestSupport"]
        ),
        .testTarget(
            name: "TokendCoreTests",
            dependencies: ["TokendCore", "TokendTestSupport"] + crypto
        ),
        .testTarget(
            name: "TokendIOTests",
            dependencies: [
                "TokendIO", "TokendCore", "TokendTestSupport", "CLinuxShims",
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "TokendDaemonTests",
            dependencies: [
                "TokendDaemon", "TokendCore", "TokendIO", "TokendTestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "TokendEndToEndTests",
            dependencies: [
                "TokendCore",
                "TokendTestSupport",
                "tokend",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
    ]
)

for target in package.targets where target.type != .system {
    target.swiftSettings =
        (target.swiftSettings ?? []) + [
            .enableUpcomingFeature("ExistentialAny"),
            .enableUpcomingFeature("MemberImportVisibility"),
        ]
}
