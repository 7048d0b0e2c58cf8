import Foundation

/// `text` made safe inside SVG, HTML and XML, as element text or a quoted attribute: the five
/// markup characters become entities, and characters XML 1.0 forbids even as entities (control
/// characters other than tab, newline and return; unpaired surrogates cannot occur in a String)
/// become U+FFFD. Every layer name or other user text written into a plot or report goes here.
package func markupEscaped(_ text: String) -> String {
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for scalar in text.unicodeScalars {
        switch scalar {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        case "\t", "\n", "\r": out.unicodeScalars.append(scalar)
        case _ where scalar.value < 0x20 || scalar.value == 0xFFFE || scalar.value == 0xFFFF:
            out += "\u{FFFD}"
        default: out.unicodeScalars.append(scalar)
        }
    }
    return out
}
