/// What `stat` says about a directory tokend is about to write into: its kind, owner and permission bits.
public struct DirectoryStatus: Sendable, Hashable {
    public enum Kind: Sendable, Hashable {
        case directory
        /// The path's last component is a symbolic link (seen with `lstat`, or `open` with `O_NOFOLLOW` failing).
        case symbolicLink
        /// A regular file, socket, FIFO or device.
        case other
    }

    public var kind: Kind
    public var owner: UInt32
    /// `st_mode & 0o7777`.
    public var mode: UInt32

    public init(kind: Kind, owner: UInt32, mode: UInt32) {
        self.kind = kind
        self.owner = owner
        self.mode = mode
    }
}

/// Whether tokend may write into a directory: who owns it and who else may change what is in it (issue #18).
///
/// Another user who may write in a directory can swap the file tokend writes, or plant one for it to read; one who owns
/// it can give that right to anyone. Each rule returns nil when the directory is acceptable, else the reason, worded to
/// follow the directory's path in a message ("… /run/tokend/sinks: it is writable by others (mode 0777)").
public enum DirectoryTrust {
    /// The group and other write bits.
    static let writableByOthers: UInt32 = 0o022

    /// A sink's directory: a real directory, not a symbolic link (a local user who can replace it would otherwise
    /// point tokend's writes and removals at any directory), owned by root or by tokend's user, and writable by
    /// neither group nor others (the sticky bit does not make it acceptable: it would not stop a planted file).
    public static func problem(withSinkDirectory status: DirectoryStatus, daemonUID: UInt32) -> String? {
        switch status.kind {
        case .symbolicLink: return "it is a symbolic link; tokend writes sinks only into a real directory"
        case .other: return "it is not a directory"
        case .directory: break
        }
        if status.owner != 0 && status.owner != daemonUID {
            return "it is owned by uid \(status.owner), not by root or tokend's uid \(daemonUID)"
        }
        return writableProblem(status.mode)
    }

    /// The state directory (the cache): a directory owned by tokend's own user and writable by no one else.
    ///
    /// A cache record planted there would be served as a token. Its path may be a symbolic link (`DynamicUser=` makes
    /// `/var/lib/tokend` one): the caller passes what the link points at.
    public static func problem(withStateDirectory status: DirectoryStatus, daemonUID: UInt32) -> String? {
        guard status.kind == .directory else { return "it is not a directory" }
        if status.owner != daemonUID {
            return "it is owned by uid \(status.owner), not by tokend's uid \(daemonUID)"
        }
        return writableProblem(status.mode)
    }

    private static func writableProblem(_ mode: UInt32) -> String? {
        guard mode & writableByOthers != 0 else { return nil }
        let who = mode & 0o002 != 0 ? "others" : "its group"
        return "it is writable by \(who) (mode \(octal(mode)))"
    }

    /// A mode as four octal digits: 0755, 1777.
    static func octal(_ mode: UInt32) -> String {
        let digits = String(mode & 0o7777, radix: 8)
        return String(repeating: "0", count: max(0, 4 - digits.count)) + digits
    }
}
