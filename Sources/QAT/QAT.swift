// The library product: one import for users of the package. Each floor is its own target, so
// the compiler keeps the arrows one way (Package.swift); this file only re-exports them.
@_exported import QATIO
@_exported import QATCore
@_exported import QATModel
@_exported import QATONNX
@_exported import QATData
@_exported import QATTrain
@_exported import QATDeploy
@_exported import QATDebug
