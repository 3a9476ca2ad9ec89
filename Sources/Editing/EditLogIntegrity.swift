import Foundation
import Llama

extension EditLog {
    /// Throws `EditingError.editLogCorrupt` unless the edit log of the store at `path` verifies: every entry's
    /// `entry_sha256`, the list of entries against the header's `log_sha256` (so a deleted entry group is caught), the
    /// entries' schema and factor shapes for the store's configuration. A store without `/edits` verifies (it holds the
    /// base model). Reads the log and `/config` only, not the weights.
    public static func requireIntact(path: String) throws {
        let h5 = try openStore(path)
        defer { try? h5.close() }
        let log = try EditLogReader.read(h5)
        try requireIntact(log, config: try ModelStore.configuration(h5), path: path)
    }
}
