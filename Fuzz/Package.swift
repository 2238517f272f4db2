// swift-tools-version:6.1
import PackageDescription

// libFuzzer harnesses for tokend's pure core, built only by `make fuzz` (never by `make test`):
//   swift build --package-path Fuzz -Xswiftc -sanitize=fuzzer,address
// `Sources/TokendCore` is a symlink to the real sources, so this package builds the very same code with the
// sanitizers and its own scratch directory, and does not depend on the name of the checkout's directory.
let package = Package(
    name: "tokend-fuzz",
    dependencies: [
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        .package(url: "https://github.com/apple/swift-crypto", from: "4.5.2"),
    ],
    targets: [
        .target(
            name: "TokendCore",
            dependencies: [
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(name: "tokend-fuzz", dependencies: ["TokendCore"]),
    ]
)
