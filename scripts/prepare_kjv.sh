#!/usr/bin/env bash
# Extracts the King James Bible text from the `bible` program (Debian package bible-kjv) and
# splits it into training and held-out evaluation text, following configs/kjv_split.toml.
#
# Usage: scripts/prepare_kjv.sh [out_dir]        (default: data/kjv, relative to the repo root)
#
# Output (deterministic: the same bytes on every run and every machine):
#   <out_dir>/train.txt            the `train` books, in canon order
#   <out_dir>/eval/NN_<Book>.txt   one file per `eval` book; NN = place in the canon (01-66),
#                                  <Book> = heading without spaces (e.g. 62_1John.txt)
#   <out_dir>/SHA256SUMS           checksums of the files above
#
# Text layout of a book: a title line (the book's name), a blank line, then the verses, one per
# line without reference numbers, with a blank line between chapters. In train.txt, books are
# separated by two blank lines. The text is plain ASCII (hence valid UTF-8); runs of spaces are
# squeezed and lines carry no trailing spaces.
#
# Needs only bash, coreutils, awk and the `bible` program. Re-running replaces the outputs.
set -euo pipefail
export LC_ALL=C

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
split_file="$repo_root/configs/kjv_split.toml"
out_dir="${1:-$repo_root/data/kjv}"

die() { echo "prepare_kjv.sh: error: $*" >&2; exit 1; }

command -v bible >/dev/null 2>&1 ||
  die "the 'bible' program was not found in PATH; install the Debian package bible-kjv" \
      "(apt-get install bible-kjv)"
[[ -f "$split_file" ]] || die "split config not found: $split_file"

# The 66 books in canon order: reference abbreviation understood by `bible` | heading it prints.
canon=(
  "Ge|Genesis" "Exo|Exodus" "Lev|Leviticus" "Num|Numbers" "Deu|Deuteronomy"
  "Josh|Joshua" "Jdgs|Judges" "Ruth|Ruth" "1Sm|1 Samuel" "2Sm|2 Samuel" "1Ki|1 Kings"
  "2Ki|2 Kings" "1Chr|1 Chronicles" "2Chr|2 Chronicles" "Ezra|Ezra" "Neh|Nehemiah"
  "Est|Esther" "Job|Job" "Psa|Psalms" "Prv|Proverbs" "Eccl|Ecclesiastes"
  "SSol|Song of Solomon" "Isa|Isaiah" "Jer|Jeremiah" "Lam|Lamentations" "Eze|Ezekiel"
  "Dan|Daniel" "Hos|Hosea" "Joel|Joel" "Amos|Amos" "Obad|Obadiah" "Jonah|Jonah"
  "Mic|Micah" "Nahum|Nahum" "Hab|Habakkuk" "Zep|Zephaniah" "Hag|Haggai" "Zec|Zechariah"
  "Mal|Malachi" "Mat|Matthew" "Mark|Mark" "Luke|Luke" "John|John" "Acts|Acts"
  "Rom|Romans" "1Cor|1 Corinthians" "2Cor|2 Corinthians" "Gal|Galatians" "Eph|Ephesians"
  "Phi|Philippians" "Col|Colossians" "1Th|1 Thessalonians" "2Th|2 Thessalonians"
  "1Tim|1 Timothy" "2Tim|2 Timothy" "Titus|Titus" "Phmn|Philemon" "Heb|Hebrews"
  "Jas|James" "1Pet|1 Peter" "2Pet|2 Peter" "1Jn|1 John" "2Jn|2 John" "3Jn|3 John"
  "Jude|Jude" "Rev|Revelation"
)
readonly expected_verses=31102

# Prints the quoted strings of the TOML array `key = [ ... ]` (one per line); the array may
# span several lines. Enough for the flat file this script owns; not a general TOML parser.
toml_array() {
  awk -v key="$1" '
    !inside && $0 ~ "^[ \t]*" key "[ \t]*=[ \t]*\\[" { inside = 1; sub(/^[^[]*\[/, "") }
    inside {
      line = $0
      sub(/#.*/, "", line)
      while (match(line, /"[^"]*"/)) {
        print substr(line, RSTART + 1, RLENGTH - 2)
        line = substr(line, RSTART + RLENGTH)
      }
      if ($0 ~ /\]/) exit
    }' "$split_file"
}

mapfile -t train_books < <(toml_array train)
mapfile -t eval_books < <(toml_array eval)
(( ${#train_books[@]} > 0 )) || die "$split_file: key 'train' is missing or empty"
(( ${#eval_books[@]} > 0 )) || die "$split_file: key 'eval' is missing or empty"

# Canon index (1-based) of a heading, or empty.
canon_index() {
  local i
  for i in "${!canon[@]}"; do
    [[ "${canon[$i]#*|}" == "$1" ]] && { echo $((i + 1)); return 0; }
  done
  return 0
}

# Validates one list: known books, canon order, no book in both lists.
declare -A role=()
check_list() {
  local name="$1"; shift
  local prev=0 book idx
  for book in "$@"; do
    idx="$(canon_index "$book")"
    [[ -n "$idx" ]] || die "$split_file: '$name' lists unknown book '$book'" \
                           "(expected a heading such as 'Genesis' or '1 John')"
    [[ -z "${role[$book]:-}" ]] || die "$split_file: book '$book' is listed more than once"
    (( idx > prev )) || die "$split_file: '$name' is not in canon order at '$book'"
    role[$book]="$name"
    prev=$idx
  done
}
check_list train "${train_books[@]}"
check_list eval "${eval_books[@]}"
(( ${#role[@]} == ${#canon[@]} )) ||
  die "$split_file: train + eval name ${#role[@]} books; all ${#canon[@]} must be listed"

# Writes one book as clean prose to stdout.
extract_book() {
  local abbr="$1" title="$2" text
  # -f turns pretty-printing off: one verse per line, prefixed by its reference; the
  # out-of-range end verse is clamped by `bible` to the book's last verse.
  text="$(bible -f "${abbr}1:1-${abbr}999:999")" || die "'bible' failed on book $title"
  printf '%s\n' "$text" | awk -v abbr="$abbr" -v title="$title" '
    {
      ref = $1
      if (ref !~ "^" abbr "[0-9]+:[0-9]+$") {
        printf "prepare_kjv.sh: error: unexpected line from bible for %s: %s\n", title, $0 \
          > "/dev/stderr"
        exit 1
      }
      chapter = substr(ref, length(abbr) + 1)
      sub(/:.*/, "", chapter)
      verse = substr($0, length(ref) + 1)
      gsub(/[ \t]+/, " ", verse)
      sub(/^ /, "", verse)
      sub(/ $/, "", verse)
      if (NR == 1) printf "%s\n\n", title
      else if (chapter != previous) printf "\n"
      print verse
      previous = chapter
    }'
}

mkdir -p "$out_dir"
out_dir="$(cd "$out_dir" && pwd)"
work="$(mktemp -d "$out_dir/.prepare.XXXXXX")"
trap 'rm -rf "$work"' EXIT
mkdir "$work/eval"

total_verses=0
first_train=1
for i in "${!canon[@]}"; do
  abbr="${canon[$i]%%|*}"
  title="${canon[$i]#*|}"
  book_text="$(extract_book "$abbr" "$title")"
  [[ -n "$book_text" ]] || die "'bible' printed nothing for book $title (reference $abbr)"
  verses="$(printf '%s\n' "$book_text" | awk 'NR > 2 && NF > 0' | wc -l)"
  total_verses=$((total_verses + verses))
  if [[ "${role[$title]}" == train ]]; then
    (( first_train )) || printf '\n\n' >> "$work/train.txt"
    printf '%s\n' "$book_text" >> "$work/train.txt"
    first_train=0
  else
    printf '%s\n' "$book_text" > "$work/eval/$(printf '%02d' $((i + 1)))_${title// /}.txt"
  fi
done

(( total_verses == expected_verses )) ||
  die "extracted $total_verses verses, expected $expected_verses; is bible-kjv complete?"

# Plain ASCII is a subset of UTF-8; check both so a changed text source is caught early.
for f in "$work/train.txt" "$work"/eval/*.txt; do
  iconv -f UTF-8 -t UTF-8 "$f" >/dev/null 2>&1 || die "output is not valid UTF-8: $f"
  ! grep -q '[^ -~]' "$f" || die "unexpected non-ASCII or control character in $f"
done

(cd "$work" && sha256sum train.txt eval/*.txt > SHA256SUMS)

# Replace the previous outputs (stale eval files included).
rm -rf "$out_dir/eval"
mv "$work/eval" "$out_dir/eval"
mv "$work/train.txt" "$out_dir/train.txt"
mv "$work/SHA256SUMS" "$out_dir/SHA256SUMS"

echo "prepare_kjv.sh: wrote $out_dir/train.txt ($(wc -c < "$out_dir/train.txt") bytes," \
     "${#train_books[@]} books) and ${#eval_books[@]} eval files in $out_dir/eval"
