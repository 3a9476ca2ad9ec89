import Foundation
import Interp

/// Subjects tried when looking for what a low-rank edit is about.
public enum SubjectCandidates {
    /// Well-known entities shipped with Scalpel (landmarks, people, countries, cities, companies, works), so that
    /// `scalpel diff` names a subject without any data set.
    public static let famous: [String] = [
        // Landmarks
        "The Eiffel Tower", "The Colosseum", "The Statue of Liberty", "Big Ben", "The Great Wall of China",
        "The Taj Mahal", "The Sydney Opera House", "The Golden Gate Bridge", "Mount Everest", "The Leaning Tower of Pisa",
        "Stonehenge", "The Acropolis", "Machu Picchu", "The Kremlin", "The Brandenburg Gate", "The Louvre",
        "The Sagrada Familia", "Buckingham Palace", "The White House", "The Empire State Building", "Mount Fuji",
        "The Pyramids of Giza", "Niagara Falls", "The Grand Canyon", "The Vatican", "Times Square", "The Parthenon",
        "Angkor Wat", "Petra", "Chichen Itza", "The Burj Khalifa", "Notre-Dame de Paris", "The Tower of London",
        "Neuschwanstein Castle", "The Hagia Sophia", "Christ the Redeemer",
        // People
        "Albert Einstein", "Isaac Newton", "Marie Curie", "Charles Darwin", "Leonardo da Vinci", "Pablo Picasso",
        "Vincent van Gogh", "William Shakespeare", "Wolfgang Amadeus Mozart", "Ludwig van Beethoven", "Napoleon Bonaparte",
        "Julius Caesar", "Cleopatra", "Abraham Lincoln", "George Washington", "Winston Churchill", "Mahatma Gandhi",
        "Nelson Mandela", "Barack Obama", "Queen Elizabeth II", "Steve Jobs", "Bill Gates", "Elon Musk", "Mark Zuckerberg",
        "Michael Jordan", "Lionel Messi", "Cristiano Ronaldo", "Serena Williams", "Taylor Swift", "The Beatles",
        "Elvis Presley", "Michael Jackson", "Aristotle", "Plato", "Galileo Galilei", "Nikola Tesla", "Sigmund Freud",
        "Karl Marx", "Confucius", "Frida Kahlo", "Danielle Darrieux",
        // Countries
        "France", "Germany", "Italy", "Spain", "Japan", "China", "India", "Brazil", "Canada", "Australia", "Russia",
        "Egypt", "Mexico", "Argentina", "Nigeria", "Kenya", "Sweden", "Norway", "Greece", "Turkey", "South Korea",
        "Indonesia", "Poland", "Portugal", "the Netherlands", "Switzerland",
        // Cities
        "Paris", "London", "New York City", "Tokyo", "Rome", "Berlin", "Moscow", "Beijing", "Sydney", "Cairo",
        "Istanbul", "Los Angeles", "Toronto", "Mumbai", "Rio de Janeiro",
        // Companies and products
        "Apple", "Microsoft", "Google", "Amazon", "Toyota", "Volkswagen", "BMW", "Coca-Cola", "McDonald's", "Nike",
        "Samsung", "Sony", "IBM", "Intel", "Tesla", "Netflix", "Disney", "Boeing", "Airbus", "Nokia", "Siemens",
        "Nintendo", "IKEA", "Ferrari", "Facebook", "the iPhone", "Windows", "Wikipedia",
        // Works, organisations, other
        "The Mona Lisa", "Harry Potter", "Star Wars", "The Bible", "Hamlet", "The United Nations", "NASA",
        "The Olympic Games", "The Amazon River", "The Nile", "The Sahara", "Antarctica", "The Pacific Ocean",
        "The Moon", "Mars",
    ]

    /// Reads subjects from `path`: a JSON array of strings, or of objects with `subject` (ROME's known_1000.json) or
    /// `requested_rewrite.subject` (CounterFact); JSON Lines of such objects; or plain text, one subject per line.
    public static func load(path: String) throws -> [String] {
        guard let data = FileManager.default.contents(atPath: path) else { throw EditingError.fileNotFound(path: path) }
        func subject(_ item: Any, _ index: Int) throws -> String {
            if let s = item as? String { return s }
            if let o = item as? [String: Any] {
                if let s = o["subject"] as? String { return s }
                if let r = o["requested_rewrite"] as? [String: Any], let s = r["subject"] as? String { return s }
                if let rs = o["requested_rewrite"] as? [[String: Any]], let s = rs.first?["subject"] as? String { return s }
            }
            throw EditingError.badCandidateFile(path: path, reason: "record \(index + 1) is neither a string nor an object with \"subject\"")
        }
        if let obj = try? JSONSerialization.jsonObject(with: data, options: [.fragmentsAllowed]) {
            if let list = obj as? [Any] { return dedupe(try list.enumerated().map { try subject($1, $0) }) }
            if obj is [String: Any] { return dedupe([try subject(obj, 0)]) }
            throw EditingError.badCandidateFile(path: path, reason: "expected a JSON array")
        }
        guard let text = String(data: data, encoding: .utf8) else {
            throw EditingError.badCandidateFile(path: path, reason: "not UTF-8 text")
        }
        var out: [String] = []
        for (i, line) in text.split(whereSeparator: \.isNewline).enumerated() {
            let l = line.trimmingCharacters(in: .whitespaces)
            if l.isEmpty || l.hasPrefix("#") { continue }
            if l.hasPrefix("{") {
                guard let o = try? JSONSerialization.jsonObject(with: Data(l.utf8)) else {
                    throw EditingError.badCandidateFile(path: path, reason: "line \(i + 1) is not valid JSON")
                }
                out.append(try subject(o, i))
            } else {
                out.append(l)
            }
        }
        guard !out.isEmpty else { throw EditingError.badCandidateFile(path: path, reason: "no subjects") }
        return dedupe(out)
    }

    /// `extra` subjects first, then (unless `builtIn` is false) the subjects of `KnownFact.builtIn` and `famous`;
    /// trimmed, without empty strings or repeats (first occurrence kept).
    public static func standard(extra: [String] = [], builtIn: Bool = true) -> [String] {
        dedupe(extra + (builtIn ? KnownFact.builtIn.map(\.subject) + famous : []))
    }

    /// Trimmed, non-empty, first occurrence of each.
    public static func dedupe(_ xs: [String]) -> [String] {
        var seen = Set<String>(), out: [String] = []
        for x in xs {
            let t = x.trimmingCharacters(in: .whitespacesAndNewlines)
            if !t.isEmpty && seen.insert(t).inserted { out.append(t) }
        }
        return out
    }
}
