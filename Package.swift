// swift-tools-version:6.0
import PackageDescription

// Release builds drop bounds checks in the hot loops; debug builds keep them for tests.
let fastMath: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

let package = Package(
    name: "qat",
    platforms: [.macOS(.v13)],
    products: [
        .executable(name: "qat", targets: ["qat"]),
        .library(name: "QAT", targets: ["QAT"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // Each C library enters through one module and one Swift file (BLAS.swift, HDF5.swift).
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        // Our own C: float loops that need `restrict` to vectorise.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])]),
        // INT8 kernels: AVX-512 VNNI, AVX2 and portable paths in one build, picked at run time.
        .target(name: "CInt8", cSettings: [.unsafeFlags(["-O3"])]),
        .target(name: "QAT", dependencies: ["CBLAS", "CHDF5", "CZlib", "CKernels", "CInt8"],
                swiftSettings: fastMath),
        .target(name: "QATCLI", dependencies: [
            "QAT", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ], swiftSettings: fastMath),
        .executableTarget(name: "qat", dependencies: ["QATCLI"], swiftSettings: fastMath),
        .executableTarget(name: "qat-bench", dependencies: ["QAT"], path: "Sources/Bench",
                          swiftSettings: fastMath),
        .executableTarget(name: "qat-int8-bench", dependencies: ["QAT"], path: "Sources/Int8Bench",
                          swiftSettings: fastMath),
        .executableTarget(name: "qat-library-example", dependencies: ["QAT"], path: "examples/LibraryAPI",
                          swiftSettings: fastMath),
        .testTarget(name: "QATTests", dependencies: ["QAT", "QATCLI"]),
    ],
    swiftLanguageModes: [.v5]
)
