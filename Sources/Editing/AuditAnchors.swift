import Foundation
import GGUF
import Hashing
import Llama

/// The checks of `scalpel audit` anchored outside the store: the head digest the user wrote down (`--expect`), its
/// HMAC signature under a key kept outside the store (`--key-file`, `--signature`), and the original checkpoint the
/// store was imported from (`--source`). Each returns findings; none trusts a value read from the store.
enum AuditAnchors {
    /// (f) The store's head digest against the one the user expects.
    static func digestFindings(actual: HeadDigest, expected: HeadDigest?) -> [AuditFinding] {
        guard let expected else { return [] }
        if actual == expected { return [AuditFinding(.info, .digest, "head digest \(actual.hex) matches the expected one")] }
        return [AuditFinding(.problem, .digest, "head digest is \(actual.hex.prefix(16))…, expected \(expected.hex.prefix(16))… "
                             + "(the store's weight hashes, tokenizer, config, provenance or edit log changed since it was recorded)")]
    }

    /// (g) The signature the user holds against the digest, under the key.
    static func signatureFindings(actual: HeadDigest, signature: String?, key: [UInt8]?) -> [AuditFinding] {
        guard let key, let signature else { return [] }
        if actual.verify(signature: signature, key: key) {
            return [AuditFinding(.info, .signature, "signature verifies: the head digest was signed with this key")]
        }
        return [AuditFinding(.problem, .signature, "signature does not verify for head digest \(actual.hex.prefix(16))… under the key "
                             + "(the store changed since it was signed, or the signature or key is not the one used)")]
    }

    /// (h) The store's base model against the checkpoint it was imported from: the file's SHA-256 and size against
    /// the store's provenance, the configuration, the tokenizer, and every base weight recomputed by the GGUF loader
    /// (the store's `hashes` are the SHA-256 of its base weights' float32 values, in `LlamaParameter.all` order).
    static func sourceFindings(sourcePath: String, store: ModelFile, hashes: [String],
                               progress: (String) -> Void) throws -> (findings: [AuditFinding], compared: Int) {
        var out: [AuditFinding] = []
        let name = (sourcePath as NSString).lastPathComponent
        func problem(_ m: String) { out.append(AuditFinding(.problem, .source, m)) }
        guard FileManager.default.fileExists(atPath: sourcePath) else { throw EditingError.fileNotFound(path: sourcePath) }
        progress("hashing \(name)")
        let fileHash = try SHA256.hex(fileAt: sourcePath)
        let prov = store.provenance
        if fileHash != prov.sourceSHA256 {
            problem("\(name) has sha256 \(fileHash.prefix(16))…, the store's provenance records \(prov.sourceSHA256.prefix(16))… "
                    + "(not the file it was imported from, or the provenance was rewritten)")
        }
        progress("loading \(name)")
        let f = try GGUFFile(path: sourcePath)
        if f.fileSize != prov.sourceSize {
            problem("\(name) is \(f.fileSize) bytes, the store's provenance records \(prov.sourceSize)")
        }
        let config = try LlamaConfig(gguf: f)
        guard config == store.config else {
            problem("\(name) has configuration \(config), the store has \(store.config); weights not compared")
            return (out, 0)
        }
        let tok = try Tokenizer(gguf: f), st = store.tokenizer
        var tokDiff: [String] = []
        if tok.vocabulary != st.vocabulary { tokDiff.append("tokens") }
        if tok.tokenTypes != st.tokenTypes { tokDiff.append("token types") }
        if tok.mergeList != st.mergeList { tokDiff.append("merges") }
        if tok.preName != st.preName { tokDiff.append("pre-tokenizer") }
        if tok.bosID != st.bosID || tok.eosID != st.eosID || tok.unknownID != st.unknownID || tok.addBOS != st.addBOS {
            tokDiff.append("special tokens")
        }
        if !tokDiff.isEmpty { problem("tokenizer differs from \(name)'s: " + tokDiff.joined(separator: ", ")) }
        progress("dequantizing \(name)")
        let params = LlamaParameter.all(config)
        let sourceHashes = EditAuditor.parallelHashes(try LlamaWeights.load(config: config, from: f), params)
        for (i, p) in params.enumerated() where sourceHashes[i] != hashes[i] {
            problem("\(p.ggufName): base values differ from \(name)'s (the base weights are not the checkpoint's)")
        }
        return (out, params.count)
    }
}
