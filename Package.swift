// swift-tools-version:6.0
import PackageDescription

// The floors of the house, each a target that may import only the floors below it, so an arrow
// pointing backwards does not compile:
//
//   QATIO      files: HDF5, strict JSON, gzip, atomic writes, user-facing errors (a leaf)
//   QATCore    tensor, tape, ops with their backward, the quantization grid, fake quant, calibrators
//   QATModel   model spec, layer kinds, the graph, the quantization plan, checkpoint layout
//   QATONNX    ONNX import: an ONNX file (read by libonnx through CONNX) as a model spec and weights
//   QATData    datasets and batches (above the model, so data can be checked against its input)
//   QATTrain   optimizers, schedules, the training loop and run (checkpoints, resume), data
//              parallel over MPI (MPI.swift, the only `import CMPI`; MPI starts only under mpirun)
//   QATDeploy  BN folding, the deploy file, the INT8 engine, the fake-quant = INT8 contract
//   QATDebug   layer-wise comparison, sensitivity, model checks
//   QATCLI     the `qat` subcommands
//
// `make` builds with --explicit-target-dependency-import-check error, so importing a target that
// is not a declared dependency fails too; scripts/check-layering.sh proves both rules.
// The library product `QAT` re-exports every floor. No target in it uses unsafe flags, so other
// packages can depend on it; the executables may (they are not part of the product).
let executableFlags: [SwiftSetting] = [.unsafeFlags(["-Ounchecked", "-wmo"], .when(configuration: .release))]

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
        // Each C library enters through one module and one Swift file (BLAS.swift, HDF5.swift, Gzip.swift, MPI.swift).
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5",
                       providers: [.apt(["libhdf5-dev"])]),
        .systemLibrary(name: "CZlib", path: "Sources/CZlib", pkgConfig: "zlib",
                       providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CMPI", path: "Sources/CMPI", pkgConfig: "ompi-c",
                       providers: [.apt(["libopenmpi-dev"])]),
        // Our own C: float loops that need `restrict` to vectorise.
        .target(name: "CKernels"),
        // The FMA-peak microbenchmark of qat-bench (not part of the library).
        .target(name: "CBench"),
        // INT8 kernels: AVX-512 VNNI, AVX2 and portable paths in one build, picked at run time.
        .target(name: "CInt8"),
        // ONNX models, parsed and checked by Debian's libonnx and libprotobuf (C++) behind a C API.
        .target(name: "CONNX",
                cxxSettings: [.define("ONNX_NAMESPACE", to: "onnx"), .define("ONNX_ML", to: "1")],
                linkerSettings: [.linkedLibrary("onnx"), .linkedLibrary("onnx_proto"), .linkedLibrary("protobuf")]),

        .target(name: "QATIO", dependencies: ["CHDF5", "CZlib"]),
        .target(name: "QATCore", dependencies: ["QATIO", "CBLAS", "CKernels"]),
        .target(name: "QATModel", dependencies: ["QATCore"]),
        .target(name: "QATONNX", dependencies: ["QATModel", "CONNX"]),
        .target(name: "QATData", dependencies: ["QATONNX"]),
        .target(name: "QATTrain", dependencies: ["QATModel", "QATONNX", "QATData", "CMPI", "CKernels"]),
        .target(name: "QATDeploy", dependencies: ["QATTrain", "QATONNX", "CInt8"]),
        .target(name: "QATDebug", dependencies: ["QATDeploy"]),
        .target(name: "QAT", dependencies: ["QATDebug"]),
        .target(name: "QATCLI", dependencies: [
            "QAT", .product(name: "ArgumentParser", package: "swift-argument-parser"),
        ]),

        .executableTarget(name: "qat", dependencies: ["QATCLI"], swiftSettings: executableFlags),
        .executableTarget(name: "qat-bench", dependencies: ["QAT", "CBench"], path: "Sources/Bench",
                          swiftSettings: executableFlags),
        .executableTarget(name: "qat-int8-bench", dependencies: ["QAT"], path: "Sources/Int8Bench",
                          swiftSettings: executableFlags),
        .executableTarget(name: "qat-library-example", dependencies: ["QAT"], path: "examples/LibraryAPI",
                          swiftSettings: executableFlags),
        .testTarget(name: "QATTests", dependencies: [
            "QATIO", "QATCore", "QATModel", "QATONNX", "QATData", "QATTrain", "QATDeploy", "QATDebug", "QAT", "QATCLI",
        ]),
    ],
    swiftLanguageModes: [.v5],
    cxxLanguageStandard: .cxx17
)
