import QATCore
import QATIO

// Tensors are a Core type and HDF5 an I/O leaf below it, so the bridge between them lives here.
extension HDF5File {
    /// Writes a float32 tensor; its shape becomes the dataset's shape (rank 0 for scalars).
    public func write(_ tensor: Tensor, at path: String) throws {
        try write(tensor.storage, shape: tensor.shape, at: path)
    }

    /// Reads a float32 dataset as a tensor.
    public func readTensor(at path: String) throws -> Tensor {
        let (shape, values) = try read(Float.self, at: path)
        return Tensor(shape: shape, storage: values)
    }
}
