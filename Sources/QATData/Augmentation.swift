/// Training-time augmentation as torchvision's `RandomCrop(size, padding=P)` followed by
/// `RandomHorizontalFlip()`: the raw image is padded with zeros on every side, a window of the
/// original size is cut at a random offset, and it is mirrored left to right with probability ½.
///
/// Counter-based: each sample's offset and flip are a hash of (seed, epoch, sample index), not
/// draws from a running generator, so a run resumed at any step augments exactly as the
/// uninterrupted run would, and checkpoints carry no generator state.
public struct Augmentation: Equatable, Sendable {
    /// Zero padding on each side before the random crop; 0: no crop.
    public var cropPadding: Int
    public var horizontalFlip: Bool

    public init(cropPadding: Int = 0, horizontalFlip: Bool = false) {
        self.cropPadding = cropPadding
        self.horizontalFlip = horizontalFlip
    }

    public var isIdentity: Bool { cropPadding == 0 && !horizontalFlip }

    /// The crop and flip of sample `index` in epoch `epoch` of a run seeded `seed`.
    public func transform(seed: UInt64, epoch: Int, index: Int) -> SampleTransform {
        var h = splitMix64(seed ^ 0x5851_F42D_4C95_7F2D)
        h = splitMix64(h ^ UInt64(truncatingIfNeeded: epoch))
        h = splitMix64(h ^ UInt64(truncatingIfNeeded: index))
        let span = UInt64(2 * cropPadding + 1)
        // Bits 0–23 choose the row offset, 24–47 the column offset, bit 63 the flip.
        return SampleTransform(padding: cropPadding, top: Int((h & 0xFF_FFFF) % span),
                               left: Int((h >> 24 & 0xFF_FFFF) % span), flip: horizontalFlip && h >> 63 == 1)
    }
}

/// One sample's augmentation: the crop window's corner in the padded image (each in 0...2·padding)
/// and whether the crop is mirrored. `top == left == padding` without flip is the identity.
public struct SampleTransform: Equatable, Sendable {
    public var padding: Int
    public var top: Int
    public var left: Int
    public var flip: Bool

    public init(padding: Int, top: Int, left: Int, flip: Bool) {
        self.padding = padding
        self.top = top
        self.left = left
        self.flip = flip
    }

    public var isIdentity: Bool { top == padding && left == padding && !flip }
}

/// SplitMix64's output function (Steele, Lea, Flood 2014): a bijective 64-bit mix.
func splitMix64(_ x: UInt64) -> UInt64 {
    var z = x &+ 0x9E37_79B9_7F4A_7C15
    z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
    z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
    return z ^ (z >> 31)
}
