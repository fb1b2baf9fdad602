//! RocketMQ's SQL92 message filter: compiles a consumer's filter expression once and evaluates it against
//! each message's properties.
//!
//! The dialect is the subset RocketMQ accepts: `AND`/`OR`/`NOT`, the comparisons `= <> < <= > >=`,
//! `[NOT] BETWEEN`, `[NOT] IN`, `IS [NOT] NULL`, `[NOT] CONTAINS`/`STARTSWITH`/`ENDSWITH`, and literals
//! (integers, floats, `'strings'`, `TRUE`, `FALSE`). Logic is three-valued: a missing property makes a
//! comparison UNKNOWN, and only a strict TRUE matches the message.
//!
//! The expression comes from a client, so every limit is checked by [`SqlFilter::parse`]; a compiled
//! filter then evaluates in time and stack bounded by those limits. Comparisons between two literals are
//! folded while parsing, so a type clash between literals is a [`ParseError`] and an [`EvalError`] always
//! names the property whose value could not be converted.

use std::cmp::Ordering;
use std::fmt;

/// Longest accepted expression, in bytes.
pub const EXPRESSION_BYTES_MAX: usize = 4096;
/// Deepest accepted nesting of parentheses and `NOT`s; it bounds recursion in the parser and evaluator.
pub const NESTING_DEPTH_MAX: usize = 64;
/// Most values accepted in one `IN (...)` list.
pub const IN_LIST_MAX: usize = 256;
/// Longest prefix of a property value copied into an [`EvalError`], in bytes; values can be large.
const ERROR_VALUE_BYTES_MAX: usize = 64;

// The byte limit must not make the other limits unreachable, or they would be dead code: a nesting level
// costs at least one byte (`(`) and an IN value at least three (`'',`).
const _: () = assert!(NESTING_DEPTH_MAX < EXPRESSION_BYTES_MAX);
const _: () = assert!(IN_LIST_MAX * "'',".len() < EXPRESSION_BYTES_MAX);

/// A syntax or limit error in a filter expression.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (at byte {at})")]
pub struct ParseError {
    /// Byte offset into the expression where the problem was found.
    pub at: usize,
    pub message: String,
}

impl ParseError {
    fn new(at: usize, message: impl Into<String>) -> Self {
        Self { at, message: message.into() }
    }
}

/// A property value that a compiled filter could not evaluate; the message is not matched.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("property `{property}` is {value:?}, which is not a number")]
    NotANumber { property: String, value: String },
    #[error("property `{property}` is {value:?}, which is neither true nor false")]
    NotABoolean { property: String, value: String },
}

/// A compiled SQL92 filter expression.
#[derive(Clone, Debug)]
pub struct SqlFilter {
    root: Expr,
}

impl SqlFilter {
    /// Compiles `expr`, checking syntax, literal types and every limit.
    pub fn parse(expr: &str) -> Result<SqlFilter, ParseError> {
        if expr.len() > EXPRESSION_BYTES_MAX {
            let message = format!("expression is {} bytes, more than {EXPRESSION_BYTES_MAX}", expr.len());
            return Err(ParseError::new(EXPRESSION_BYTES_MAX, message));
        }
        let mut parser = Parser { tokens: tokenize(expr)?, pos: 0, depth: 0, end: expr.len() };
        if parser.peek() == &Tok::End {
            return Err(ParseError::new(0, "empty expression"));
        }
        let root = parser.or()?;
        if parser.peek() != &Tok::End {
            return Err(parser.unexpected("AND, OR or the end of the expression"));
        }
        Ok(SqlFilter { root })
    }

    /// Evaluates the filter against a message whose properties `property` looks up by name.
    ///
    /// `Ok(true)` means matched; `Ok(false)` means the expression is FALSE or UNKNOWN.
    pub fn evaluate<'v>(&self, property: impl Fn(&str) -> Option<&'v str>) -> Result<bool, EvalError> {
        Ok(self.root.eval(&property)? == Some(true))
    }
}

/// `None` is SQL's UNKNOWN.
type Truth = Option<bool>;

#[derive(Clone, Debug)]
enum Expr {
    Const(bool),
    Not(Box<Expr>),
    /// N-ary rather than binary so a long chain of ANDs does not deepen the tree.
    And(Vec<Expr>),
    Or(Vec<Expr>),
    /// A bare property used as a condition: its value must be `true` or `false`.
    Property(String),
    Compare {
        op: CmpOp,
        left: Operand,
        right: Operand,
    },
    Between {
        property: String,
        low: Number,
        high: Number,
        negated: bool,
    },
    In {
        property: String,
        values: Vec<String>,
        negated: bool,
    },
    IsNull {
        property: String,
        negated: bool,
    },
    Text {
        op: TextOp,
        property: String,
        pattern: String,
        negated: bool,
    },
}

#[derive(Clone, Debug)]
enum Operand {
    Property(String),
    Text(String),
    Number(Number),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Number {
    Int(i64),
    Float(f64),
}

/// An operand after property lookup.
#[derive(Clone, Copy, Debug)]
enum Value<'a> {
    Text(&'a str),
    Number(Number),
    Bool(bool),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum CmpOp {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum TextOp {
    Contains,
    StartsWith,
    EndsWith,
}

impl Expr {
    fn eval<'v, F: Fn(&str) -> Option<&'v str>>(&self, props: &F) -> Result<Truth, EvalError> {
        match self {
            Expr::Const(b) => Ok(Some(*b)),
            Expr::Not(inner) => Ok(inner.eval(props)?.map(|b| !b)),
            Expr::And(terms) => junction(terms, props, false),
            Expr::Or(terms) => junction(terms, props, true),
            Expr::Property(name) => match props(name) {
                None => Ok(None),
                Some(v) => text_to_bool(v)
                    .map(Some)
                    .ok_or_else(|| EvalError::NotABoolean { property: name.clone(), value: clip(v) }),
            },
            Expr::Compare { op, left, right } => {
                let (Some(l), Some(r)) = (resolve(left, props), resolve(right, props)) else {
                    return Ok(None);
                };
                compare_values(*op, l, r).map(Some).map_err(|m| m.into_error(left, l, right, r))
            }
            Expr::Between { property, low, high, negated } => {
                let Some(v) = props(property) else { return Ok(None) };
                let within = between_values(Value::Text(v), *low, *high);
                within
                    .map(|b| Some(b != *negated))
                    .map_err(|_| EvalError::NotANumber { property: property.clone(), value: clip(v) })
            }
            Expr::In { property, values, negated } => {
                Ok(props(property).map(|v| values.iter().any(|x| x == v) != *negated))
            }
            Expr::IsNull { property, negated } => Ok(Some(props(property).is_none() != *negated)),
            Expr::Text { op, property, pattern, negated } => {
                Ok(props(property).map(|v| op.test(v, pattern) != *negated))
            }
        }
    }
}

/// AND (`dominant` FALSE) or OR (`dominant` TRUE) with SQL's three-valued logic: any dominant term decides
/// the result, otherwise any UNKNOWN makes it UNKNOWN. Stops at the first dominant term, as RocketMQ does,
/// so a later term's evaluation error does not surface.
fn junction<'v, F: Fn(&str) -> Option<&'v str>>(terms: &[Expr], props: &F, dominant: bool) -> Result<Truth, EvalError> {
    let mut result = Some(!dominant);
    for term in terms {
        match term.eval(props)? {
            Some(b) if b == dominant => return Ok(Some(dominant)),
            Some(_) => {}
            None => result = None,
        }
    }
    Ok(result)
}

fn resolve<'a, 'v: 'a, F: Fn(&str) -> Option<&'v str>>(operand: &'a Operand, props: &F) -> Option<Value<'a>> {
    match operand {
        Operand::Property(name) => props(name).map(Value::Text),
        Operand::Text(s) => Some(Value::Text(s)),
        Operand::Number(n) => Some(Value::Number(*n)),
        Operand::Bool(b) => Some(Value::Bool(*b)),
    }
}

/// Which side of a comparison could not be converted, and to what.
#[derive(Clone, Copy, Debug)]
struct Mismatch {
    left: bool,
    want_bool: bool,
}

impl Mismatch {
    const LEFT_NUMBER: Mismatch = Mismatch { left: true, want_bool: false };
    const RIGHT_NUMBER: Mismatch = Mismatch { left: false, want_bool: false };
    const LEFT_BOOL: Mismatch = Mismatch { left: true, want_bool: true };
    const RIGHT_BOOL: Mismatch = Mismatch { left: false, want_bool: true };

    fn into_error(self, left: &Operand, l: Value<'_>, right: &Operand, r: Value<'_>) -> EvalError {
        let (operand, value) = if self.left { (left, l) } else { (right, r) };
        // Literals are type-checked while parsing, so the failing side is a property in practice.
        let property = match operand {
            Operand::Property(name) => name.clone(),
            literal => literal.to_string(),
        };
        let value = match value {
            Value::Text(s) => clip(s),
            other => other.to_string(),
        };
        if self.want_bool {
            EvalError::NotABoolean { property, value }
        } else {
            EvalError::NotANumber { property, value }
        }
    }
}

/// RocketMQ's comparison rules: text converts to the other side's type; text against text compares
/// exactly for `=`/`<>` and as numbers for ordering.
fn compare_values(op: CmpOp, left: Value<'_>, right: Value<'_>) -> Result<bool, Mismatch> {
    let ordering = op.is_ordering();
    let ord = match (left, right) {
        (Value::Text(l), Value::Text(r)) if !ordering => Some(l.cmp(r)),
        (Value::Text(l), Value::Text(r)) => {
            let l = text_to_float(l).ok_or(Mismatch::LEFT_NUMBER)?;
            let r = text_to_float(r).ok_or(Mismatch::RIGHT_NUMBER)?;
            l.partial_cmp(&r)
        }
        (Value::Number(l), Value::Number(r)) => compare_numbers(l, r),
        (Value::Text(l), Value::Number(r)) => compare_numbers(text_to_number(l, r).ok_or(Mismatch::LEFT_NUMBER)?, r),
        (Value::Number(l), Value::Text(r)) => compare_numbers(l, text_to_number(r, l).ok_or(Mismatch::RIGHT_NUMBER)?),
        (Value::Bool(l), Value::Bool(r)) if !ordering => Some(l.cmp(&r)),
        (Value::Text(l), Value::Bool(r)) if !ordering => Some(text_to_bool(l).ok_or(Mismatch::LEFT_BOOL)?.cmp(&r)),
        (Value::Bool(l), Value::Text(r)) if !ordering => Some(l.cmp(&text_to_bool(r).ok_or(Mismatch::RIGHT_BOOL)?)),
        (Value::Bool(_), _) => return Err(Mismatch::LEFT_NUMBER),
        (_, Value::Bool(_)) => return Err(Mismatch::RIGHT_NUMBER),
    };
    Ok(op.holds(ord))
}

fn between_values(value: Value<'_>, low: Number, high: Number) -> Result<bool, Mismatch> {
    Ok(compare_values(CmpOp::Ge, value, Value::Number(low))? && compare_values(CmpOp::Le, value, Value::Number(high))?)
}

fn compare_numbers(left: Number, right: Number) -> Option<Ordering> {
    match (left, right) {
        (Number::Int(l), Number::Int(r)) => Some(l.cmp(&r)),
        (l, r) => l.as_f64().partial_cmp(&r.as_f64()),
    }
}

/// Converts a property value for comparison with `like`: against an integer it is read as an integer,
/// or as a float if it has a fraction; against a float it is read as a float.
fn text_to_number(text: &str, like: Number) -> Option<Number> {
    match like {
        Number::Int(_) => text.parse().ok().map(Number::Int).or_else(|| text_to_float(text).map(Number::Float)),
        Number::Float(_) => text_to_float(text).map(Number::Float),
    }
}

/// Rejects NaN and infinities, which Rust's parser accepts but which have no sensible ordering here.
fn text_to_float(text: &str) -> Option<f64> {
    text.parse::<f64>().ok().filter(|f| f.is_finite())
}

fn text_to_bool(text: &str) -> Option<bool> {
    if text.eq_ignore_ascii_case("true") {
        Some(true)
    } else if text.eq_ignore_ascii_case("false") {
        Some(false)
    } else {
        None
    }
}

fn clip(text: &str) -> String {
    let mut end = text.len().min(ERROR_VALUE_BYTES_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or_default().to_owned()
}

impl Number {
    fn as_f64(self) -> f64 {
        match self {
            Number::Int(i) => i as f64,
            Number::Float(f) => f,
        }
    }
}

impl CmpOp {
    fn is_ordering(self) -> bool {
        !matches!(self, CmpOp::Eq | CmpOp::Ne)
    }

    /// `ord` is `None` only for unordered floats, which are never equal.
    fn holds(self, ord: Option<Ordering>) -> bool {
        let Some(ord) = ord else { return self == CmpOp::Ne };
        match self {
            CmpOp::Eq => ord.is_eq(),
            CmpOp::Ne => ord.is_ne(),
            CmpOp::Lt => ord.is_lt(),
            CmpOp::Le => ord.is_le(),
            CmpOp::Gt => ord.is_gt(),
            CmpOp::Ge => ord.is_ge(),
        }
    }
}

impl TextOp {
    fn test(self, text: &str, pattern: &str) -> bool {
        match self {
            TextOp::Contains => text.contains(pattern),
            TextOp::StartsWith => text.starts_with(pattern),
            TextOp::EndsWith => text.ends_with(pattern),
        }
    }
}

impl fmt::Display for Number {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Number::Int(i) => write!(f, "{i}"),
            Number::Float(x) => write!(f, "{x:?}"),
        }
    }
}

impl fmt::Display for Value<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Text(s) => f.write_str(s),
            Value::Number(n) => write!(f, "{n}"),
            Value::Bool(b) => f.write_str(if *b { "TRUE" } else { "FALSE" }),
        }
    }
}

impl fmt::Display for Operand {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Operand::Property(name) => f.write_str(name),
            Operand::Text(s) => write!(f, "'{}'", s.replace('\'', "''")),
            Operand::Number(n) => write!(f, "{n}"),
            Operand::Bool(b) => write!(f, "{}", Value::Bool(*b)),
        }
    }
}

impl fmt::Display for CmpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CmpOp::Eq => "=",
            CmpOp::Ne => "<>",
            CmpOp::Lt => "<",
            CmpOp::Le => "<=",
            CmpOp::Gt => ">",
            CmpOp::Ge => ">=",
        })
    }
}

// ---------------------------------------------------------------------------------------------------------
// Lexer

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Keyword {
    And,
    Or,
    Not,
    Between,
    In,
    Is,
    Null,
    True,
    False,
    Contains,
    StartsWith,
    EndsWith,
}

const KEYWORDS: [(&str, Keyword); 12] = [
    ("AND", Keyword::And),
    ("OR", Keyword::Or),
    ("NOT", Keyword::Not),
    ("BETWEEN", Keyword::Between),
    ("IN", Keyword::In),
    ("IS", Keyword::Is),
    ("NULL", Keyword::Null),
    ("TRUE", Keyword::True),
    ("FALSE", Keyword::False),
    ("CONTAINS", Keyword::Contains),
    ("STARTSWITH", Keyword::StartsWith),
    ("ENDSWITH", Keyword::EndsWith),
];

#[derive(Clone, Debug, PartialEq)]
enum Tok<'s> {
    Ident(&'s str),
    Keyword(Keyword),
    Text(String),
    /// Unsigned: a leading `-` is a separate token, and `-9223372036854775808` must still fit.
    Int(u64),
    Float(f64),
    Cmp(CmpOp),
    LParen,
    RParen,
    Comma,
    Plus,
    Minus,
    End,
}

#[derive(Clone, Debug)]
struct Token<'s> {
    tok: Tok<'s>,
    at: usize,
}

/// Splits the whole expression up front; the byte limit bounds the token count.
fn tokenize(src: &str) -> Result<Vec<Token<'_>>, ParseError> {
    let mut lexer = Lexer { src, pos: 0 };
    let mut tokens = Vec::new();
    loop {
        lexer.skip_blanks()?;
        let at = lexer.pos;
        let tok = lexer.token()?;
        let end = tok == Tok::End;
        tokens.push(Token { tok, at });
        if end {
            return Ok(tokens);
        }
    }
}

/// `pos` only ever moves past ASCII bytes or to a match of an ASCII pattern, so it stays on a char boundary.
struct Lexer<'s> {
    src: &'s str,
    pos: usize,
}

impl<'s> Lexer<'s> {
    fn byte(&self, ahead: usize) -> Option<u8> {
        self.src.as_bytes().get(self.pos + ahead).copied()
    }

    fn rest(&self) -> &'s str {
        self.src.get(self.pos..).unwrap_or_default()
    }

    fn skip_blanks(&mut self) -> Result<(), ParseError> {
        loop {
            match (self.byte(0), self.byte(1)) {
                (Some(b), _) if b.is_ascii_whitespace() => self.pos += 1,
                (Some(b'-'), Some(b'-')) => match self.rest().find('\n') {
                    Some(i) => self.pos += i + 1,
                    None => self.pos = self.src.len(),
                },
                (Some(b'/'), Some(b'*')) => match self.rest().get(2..).and_then(|r| r.find("*/")) {
                    Some(i) => self.pos += i + 4,
                    None => return Err(ParseError::new(self.pos, "unterminated /* comment")),
                },
                _ => return Ok(()),
            }
        }
    }

    fn token(&mut self) -> Result<Tok<'s>, ParseError> {
        let Some(b) = self.byte(0) else { return Ok(Tok::End) };
        let (tok, len) = match (b, self.byte(1)) {
            (b'(', _) => (Tok::LParen, 1),
            (b')', _) => (Tok::RParen, 1),
            (b',', _) => (Tok::Comma, 1),
            (b'+', _) => (Tok::Plus, 1),
            (b'-', _) => (Tok::Minus, 1),
            (b'=', _) => (Tok::Cmp(CmpOp::Eq), 1),
            (b'<', Some(b'>')) => (Tok::Cmp(CmpOp::Ne), 2),
            (b'<', Some(b'=')) => (Tok::Cmp(CmpOp::Le), 2),
            (b'<', _) => (Tok::Cmp(CmpOp::Lt), 1),
            (b'>', Some(b'=')) => (Tok::Cmp(CmpOp::Ge), 2),
            (b'>', _) => (Tok::Cmp(CmpOp::Gt), 1),
            (b'\'', _) => return self.string(),
            (b'0'..=b'9', _) | (b'.', Some(b'0'..=b'9')) => return self.number(),
            (b'a'..=b'z' | b'A'..=b'Z' | b'_' | b'$', _) => return Ok(self.ident()),
            _ => {
                let c = self.rest().chars().next().unwrap_or_default();
                return Err(ParseError::new(self.pos, format!("unexpected character {c:?}")));
            }
        };
        self.pos += len;
        Ok(tok)
    }

    /// `''` inside a string stands for one quote.
    fn string(&mut self) -> Result<Tok<'s>, ParseError> {
        let start = self.pos;
        self.pos += 1;
        let mut text = String::new();
        loop {
            let rest = self.rest();
            let Some(i) = rest.find('\'') else {
                return Err(ParseError::new(start, "unterminated string literal"));
            };
            text.push_str(rest.get(..i).unwrap_or_default());
            self.pos += i + 1;
            if self.byte(0) != Some(b'\'') {
                return Ok(Tok::Text(text));
            }
            text.push('\'');
            self.pos += 1;
        }
    }

    fn number(&mut self) -> Result<Tok<'s>, ParseError> {
        let start = self.pos;
        self.digits();
        let mut float = false;
        if self.byte(0) == Some(b'.') {
            self.pos += 1;
            self.digits();
            float = true;
        }
        // An `e` not followed by digits is not an exponent; it is left to become the next token.
        if matches!(self.byte(0), Some(b'e' | b'E')) {
            let sign = usize::from(matches!(self.byte(1), Some(b'+' | b'-')));
            if matches!(self.byte(1 + sign), Some(b'0'..=b'9')) {
                self.pos += 1 + sign;
                self.digits();
                float = true;
            }
        }
        let text = self.src.get(start..self.pos).unwrap_or_default();
        if float {
            return match text.parse::<f64>() {
                Ok(x) if x.is_finite() => Ok(Tok::Float(x)),
                _ => Err(ParseError::new(start, format!("float literal {text} is out of range"))),
            };
        }
        // RocketMQ would read these as octal; ferrymq rejects them rather than guess.
        if text.len() > 1 && text.starts_with('0') {
            return Err(ParseError::new(start, format!("integer literal {text} has a leading zero")));
        }
        let Ok(magnitude) = text.parse::<u64>() else {
            return Err(ParseError::new(start, format!("integer literal {text} is out of range")));
        };
        if matches!(self.byte(0), Some(b'l' | b'L')) {
            self.pos += 1;
        }
        Ok(Tok::Int(magnitude))
    }

    fn digits(&mut self) {
        while matches!(self.byte(0), Some(b'0'..=b'9')) {
            self.pos += 1;
        }
    }

    fn ident(&mut self) -> Tok<'s> {
        let start = self.pos;
        while matches!(self.byte(0), Some(b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'$' | b'.')) {
            self.pos += 1;
        }
        let name = self.src.get(start..self.pos).unwrap_or_default();
        match KEYWORDS.iter().find(|(word, _)| word.eq_ignore_ascii_case(name)) {
            Some((_, keyword)) => Tok::Keyword(*keyword),
            None => Tok::Ident(name),
        }
    }
}

// ---------------------------------------------------------------------------------------------------------
// Parser: recursive descent, lowest precedence first.
//
//   or        := and (OR and)*
//   and       := not (AND not)*
//   not       := NOT not | '(' or ')' | predicate
//   predicate := operand [ cmp operand | [NOT] BETWEEN number AND number | [NOT] IN '(' string, ... ')'
//                        | IS [NOT] NULL | [NOT] (CONTAINS | STARTSWITH | ENDSWITH) string ]
//   operand   := property | string | number | TRUE | FALSE;   number := ('+' | '-')* (integer | float)

struct Parser<'s> {
    tokens: Vec<Token<'s>>,
    pos: usize,
    /// Enclosing parentheses and NOTs, bounded by `NESTING_DEPTH_MAX`.
    depth: usize,
    end: usize,
}

impl<'s> Parser<'s> {
    fn peek(&self) -> &Tok<'s> {
        self.tokens.get(self.pos).map_or(&Tok::End, |t| &t.tok)
    }

    fn at(&self) -> usize {
        self.tokens.get(self.pos).map_or(self.end, |t| t.at)
    }

    fn advance(&mut self) {
        self.pos += 1;
    }

    fn eat(&mut self, tok: &Tok<'_>) -> bool {
        let found = self.peek() == tok;
        if found {
            self.advance();
        }
        found
    }

    fn expect(&mut self, tok: &Tok<'_>, what: &str) -> Result<(), ParseError> {
        if self.eat(tok) { Ok(()) } else { Err(self.unexpected(what)) }
    }

    fn unexpected(&self, expected: &str) -> ParseError {
        let found = match self.peek() {
            Tok::Ident(name) => format!("`{name}`"),
            Tok::Keyword(keyword) => format!("{keyword:?}").to_uppercase(),
            Tok::Text(_) => "a string".to_owned(),
            Tok::Int(_) | Tok::Float(_) => "a number".to_owned(),
            Tok::Cmp(op) => format!("`{op}`"),
            Tok::LParen => "`(`".to_owned(),
            Tok::RParen => "`)`".to_owned(),
            Tok::Comma => "`,`".to_owned(),
            Tok::Plus => "`+`".to_owned(),
            Tok::Minus => "`-`".to_owned(),
            Tok::End => "the end of the expression".to_owned(),
        };
        ParseError::new(self.at(), format!("expected {expected}, found {found}"))
    }

    fn or(&mut self) -> Result<Expr, ParseError> {
        self.chain(Keyword::Or, Self::and, Expr::Or)
    }

    fn and(&mut self) -> Result<Expr, ParseError> {
        self.chain(Keyword::And, Self::not, Expr::And)
    }

    fn chain(
        &mut self,
        keyword: Keyword,
        term: fn(&mut Self) -> Result<Expr, ParseError>,
        build: fn(Vec<Expr>) -> Expr,
    ) -> Result<Expr, ParseError> {
        let first = term(self)?;
        if self.peek() != &Tok::Keyword(keyword) {
            return Ok(first);
        }
        let mut terms = vec![first];
        while self.eat(&Tok::Keyword(keyword)) {
            terms.push(term(self)?);
        }
        Ok(build(terms))
    }

    fn not(&mut self) -> Result<Expr, ParseError> {
        let at = self.at();
        if self.eat(&Tok::Keyword(Keyword::Not)) {
            return self.nested(at, |p| Ok(Expr::Not(Box::new(p.not()?))));
        }
        if self.eat(&Tok::LParen) {
            return self.nested(at, |p| {
                let inner = p.or()?;
                p.expect(&Tok::RParen, "`)`")?;
                Ok(inner)
            });
        }
        self.predicate()
    }

    fn nested(
        &mut self,
        at: usize,
        inner: impl FnOnce(&mut Self) -> Result<Expr, ParseError>,
    ) -> Result<Expr, ParseError> {
        if self.depth >= NESTING_DEPTH_MAX {
            return Err(ParseError::new(at, format!("nesting is deeper than {NESTING_DEPTH_MAX} levels")));
        }
        self.depth += 1;
        let result = inner(self);
        self.depth -= 1;
        result
    }

    fn predicate(&mut self) -> Result<Expr, ParseError> {
        let at = self.at();
        let left = self.operand()?;
        let negated = self.eat(&Tok::Keyword(Keyword::Not));
        match self.peek() {
            Tok::Cmp(op) if !negated => {
                let op = *op;
                self.advance();
                let right = self.operand()?;
                comparison(at, op, left, right)
            }
            Tok::Keyword(Keyword::Between) => {
                self.advance();
                self.between(at, left, negated)
            }
            Tok::Keyword(Keyword::In) => {
                self.advance();
                let Operand::Property(property) = left else {
                    return Err(ParseError::new(at, format!("the left side of IN must be a property, not {left}")));
                };
                Ok(Expr::In { property, values: self.in_list()?, negated })
            }
            Tok::Keyword(Keyword::Is) if !negated => {
                self.advance();
                let negated = self.eat(&Tok::Keyword(Keyword::Not));
                self.expect(&Tok::Keyword(Keyword::Null), "NULL")?;
                match left {
                    Operand::Property(property) => Ok(Expr::IsNull { property, negated }),
                    _ => Ok(Expr::Const(negated)), // a literal is never NULL
                }
            }
            Tok::Keyword(Keyword::Contains) => self.text_op(at, TextOp::Contains, left, negated),
            Tok::Keyword(Keyword::StartsWith) => self.text_op(at, TextOp::StartsWith, left, negated),
            Tok::Keyword(Keyword::EndsWith) => self.text_op(at, TextOp::EndsWith, left, negated),
            _ if negated => Err(self.unexpected("BETWEEN, IN, CONTAINS, STARTSWITH or ENDSWITH after NOT")),
            _ => match left {
                Operand::Property(name) => Ok(Expr::Property(name)),
                Operand::Bool(b) => Ok(Expr::Const(b)),
                _ => Err(self.unexpected("a comparison after the literal")),
            },
        }
    }

    fn operand(&mut self) -> Result<Operand, ParseError> {
        let operand = match self.peek() {
            Tok::Plus | Tok::Minus | Tok::Int(_) | Tok::Float(_) => return self.number().map(Operand::Number),
            Tok::Ident(name) => Operand::Property((*name).to_owned()),
            Tok::Text(s) => Operand::Text(s.clone()),
            Tok::Keyword(Keyword::True) => Operand::Bool(true),
            Tok::Keyword(Keyword::False) => Operand::Bool(false),
            Tok::Keyword(Keyword::Null) => {
                return Err(ParseError::new(self.at(), "NULL can only be tested with IS [NOT] NULL"));
            }
            _ => return Err(self.unexpected("a property or a literal")),
        };
        self.advance();
        Ok(operand)
    }

    /// Signs apply to numbers only; they are folded here so `-9223372036854775808` is representable.
    fn number(&mut self) -> Result<Number, ParseError> {
        let at = self.at();
        let mut negative = false;
        loop {
            match self.peek() {
                Tok::Plus => {}
                Tok::Minus => negative = !negative,
                _ => break,
            }
            self.advance();
        }
        let number = match *self.peek() {
            Tok::Int(magnitude) => {
                let signed = if negative { 0i128 - i128::from(magnitude) } else { i128::from(magnitude) };
                let Ok(value) = i64::try_from(signed) else {
                    return Err(ParseError::new(at, format!("integer literal {signed} is out of range")));
                };
                Number::Int(value)
            }
            Tok::Float(x) => Number::Float(if negative { -x } else { x }),
            _ => return Err(self.unexpected("a number")),
        };
        self.advance();
        Ok(number)
    }

    fn between(&mut self, at: usize, left: Operand, negated: bool) -> Result<Expr, ParseError> {
        let low_at = self.at();
        let low = self.number()?;
        self.expect(&Tok::Keyword(Keyword::And), "AND")?;
        let high = self.number()?;
        if compare_numbers(low, high) == Some(Ordering::Greater) {
            return Err(ParseError::new(low_at, format!("BETWEEN bounds are reversed: {low} is greater than {high}")));
        }
        match left {
            Operand::Property(property) => Ok(Expr::Between { property, low, high, negated }),
            literal => {
                let value = resolve(&literal, &|_: &str| None::<&str>);
                let within = value.map(|v| between_values(v, low, high));
                match within {
                    Some(Ok(b)) => Ok(Expr::Const(b != negated)),
                    _ => Err(ParseError::new(at, format!("{literal} is not a number, so it cannot be in a range"))),
                }
            }
        }
    }

    fn in_list(&mut self) -> Result<Vec<String>, ParseError> {
        self.expect(&Tok::LParen, "`(` after IN")?;
        let mut values = Vec::new();
        loop {
            let Tok::Text(value) = self.peek() else { return Err(self.unexpected("a string literal")) };
            if values.len() == IN_LIST_MAX {
                return Err(ParseError::new(self.at(), format!("IN list has more than {IN_LIST_MAX} values")));
            }
            values.push(value.clone());
            self.advance();
            if !self.eat(&Tok::Comma) {
                break;
            }
        }
        self.expect(&Tok::RParen, "`,` or `)`")?;
        Ok(values)
    }

    fn text_op(&mut self, at: usize, op: TextOp, left: Operand, negated: bool) -> Result<Expr, ParseError> {
        self.advance();
        let Tok::Text(pattern) = self.peek() else { return Err(self.unexpected("a string literal")) };
        let pattern = pattern.clone();
        self.advance();
        match left {
            Operand::Property(property) => Ok(Expr::Text { op, property, pattern, negated }),
            Operand::Text(text) => Ok(Expr::Const(op.test(&text, &pattern) != negated)),
            other => Err(ParseError::new(at, format!("{other} is not a property or a string"))),
        }
    }
}

/// Type-checks the literals of a comparison, which never change, and folds it if both sides are literals.
fn comparison(at: usize, op: CmpOp, left: Operand, right: Operand) -> Result<Expr, ParseError> {
    if op.is_ordering() {
        for operand in [&left, &right] {
            let orderable = match operand {
                Operand::Bool(_) => false,
                Operand::Text(s) => text_to_float(s).is_some(),
                Operand::Property(_) | Operand::Number(_) => true,
            };
            if !orderable {
                return Err(ParseError::new(
                    at,
                    format!("{operand} is not a number, so it cannot be compared with {op}"),
                ));
            }
        }
    }
    let no_properties = |_: &str| None::<&str>;
    match (&left, &right) {
        (Operand::Property(_), _) | (_, Operand::Property(_)) => Ok(Expr::Compare { op, left, right }),
        _ => match (resolve(&left, &no_properties), resolve(&right, &no_properties)) {
            (Some(l), Some(r)) => compare_values(op, l, r)
                .map(Expr::Const)
                .map_err(|_| ParseError::new(at, format!("{left} cannot be compared with {right}"))),
            _ => Ok(Expr::Compare { op, left, right }),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn eval(expr: &str, props: &[(&str, &str)]) -> Result<bool, EvalError> {
        let filter = SqlFilter::parse(expr).expect("expression parses");
        filter.evaluate(|name| props.iter().find(|(k, _)| *k == name).map(|(_, v)| *v))
    }

    fn matches(expr: &str, props: &[(&str, &str)]) -> bool {
        eval(expr, props).expect("evaluation succeeds")
    }

    fn parse_error(expr: &str) -> ParseError {
        SqlFilter::parse(expr).expect_err("expression is rejected")
    }

    #[test]
    fn between_includes_both_bounds() {
        for (a, expected) in [("-1", false), ("0", true), ("2", true), ("3", true), ("4", false), ("3.5", false)] {
            assert_eq!(matches("a between 0 and 3", &[("a", a)]), expected, "a = {a}");
            assert_eq!(matches("a NOT BETWEEN 0 AND 3", &[("a", a)]), !expected, "a = {a}");
        }
        assert!(matches("a BETWEEN -1.5 AND 2", &[("a", "-1.5")]));
        assert!(matches("a BETWEEN 3 AND 3", &[("a", "3")]));
    }

    #[test]
    fn and_combines_numeric_and_string_comparisons() {
        let expr = "a > 5 AND b = 'abc'";
        assert!(matches(expr, &[("a", "6"), ("b", "abc")]));
        assert!(!matches(expr, &[("a", "5"), ("b", "abc")]));
        assert!(!matches(expr, &[("a", "6"), ("b", "ABC")]));
    }

    #[test]
    fn in_list_matches_exact_strings_only() {
        let expr = "TAGS in ('TagA','TagB')";
        assert!(matches(expr, &[("TAGS", "TagA")]));
        assert!(matches(expr, &[("TAGS", "TagB")]));
        assert!(!matches(expr, &[("TAGS", "taga")]));
        assert!(!matches(expr, &[("TAGS", "TagA ")]));
        assert!(matches("TAGS NOT IN ('TagA')", &[("TAGS", "TagC")]));
        assert!(!matches("TAGS NOT IN ('TagA')", &[]), "NOT IN on a missing property is UNKNOWN");
    }

    #[test]
    fn is_null_tests_presence_of_a_property() {
        assert!(matches("region IS NOT NULL", &[("region", "")]));
        assert!(!matches("region IS NOT NULL", &[]));
        assert!(matches("region is null", &[]));
        assert!(!matches("region IS NULL", &[("region", "hz")]));
    }

    #[test]
    fn text_operators_are_case_sensitive_and_negatable() {
        let name = [("name", "xyz")];
        assert!(matches("name CONTAINS 'y'", &name));
        assert!(!matches("name CONTAINS 'Y'", &name));
        assert!(matches("name STARTSWITH 'xy'", &name));
        assert!(matches("name ENDSWITH 'yz'", &name));
        assert!(matches("name NOT CONTAINS 'q'", &name));
        assert!(!matches("name NOT STARTSWITH 'x'", &name));
        assert!(!matches("name CONTAINS 'x'", &[]), "missing property is UNKNOWN");
        assert!(!matches("name NOT ENDSWITH 'x'", &[]), "NOT UNKNOWN is UNKNOWN");
    }

    #[test]
    fn missing_property_is_unknown_so_neither_comparison_nor_its_negation_matches() {
        assert!(!matches("a > 1", &[]));
        assert!(!matches("NOT (a > 1)", &[]));
        assert!(!matches("a <> 1", &[]));
        assert!(!matches("a = 'x'", &[]));
        assert!(!matches("a BETWEEN 1 AND 2", &[]));
        assert!(!matches("flag", &[]));
    }

    #[test]
    fn unknown_and_false_is_false_and_unknown_or_true_is_true() {
        let b_is_1 = [("b", "1")];
        assert!(matches("a > 1 OR b = 1", &b_is_1));
        assert!(matches("NOT (a > 1 AND b = 2)", &b_is_1), "NOT (UNKNOWN AND FALSE) is TRUE");
        assert!(!matches("NOT (a > 1 AND b = 1)", &b_is_1), "NOT (UNKNOWN AND TRUE) is UNKNOWN");
        assert!(!matches("a > 1 OR b = 2", &b_is_1), "UNKNOWN OR FALSE is UNKNOWN");
    }

    #[test]
    fn string_property_converts_to_the_number_it_is_compared_with() {
        assert!(matches("a > 9", &[("a", "10")]), "numeric, not lexicographic");
        assert!(matches("a > 1", &[("a", "1.5")]), "fraction falls back to float");
        assert!(matches("a = 1.5", &[("a", "1.5")]));
        assert!(matches("a >= 1e1", &[("a", "10")]));
        assert!(matches("a = 2.5E-2", &[("a", "0.025")]));
        assert!(matches("a < .5", &[("a", "0.25")]));
        assert!(matches("a > -5", &[("a", "-4")]));
        assert!(matches("a = 10L", &[("a", "10")]));
        assert!(matches("a = - -3", &[("a", "3")]));
        assert!(matches("a = -9223372036854775808", &[("a", "-9223372036854775808")]));
        assert!(matches("a = b", &[("a", "01"), ("b", "01")]));
        assert!(!matches("a = b", &[("a", "1"), ("b", "01")]), "text = text compares exactly");
        assert!(matches("a < b", &[("a", "9"), ("b", "10")]), "text < text compares as numbers");
        assert!(matches("a > '9'", &[("a", "10")]));
    }

    #[test]
    fn non_numeric_property_compared_with_a_number_is_an_eval_error() {
        let expected = EvalError::NotANumber { property: "a".into(), value: "abc".into() };
        assert_eq!(eval("a > 1", &[("a", "abc")]), Err(expected.clone()));
        assert_eq!(eval("a = 1.0", &[("a", "abc")]), Err(expected.clone()));
        assert_eq!(eval("a BETWEEN 1 AND 2", &[("a", "abc")]), Err(expected.clone()));
        assert_eq!(eval("a > '9'", &[("a", "abc")]), Err(expected));
        assert!(matches!(eval("a = 1", &[("a", "NaN")]), Err(EvalError::NotANumber { .. })));
        assert!(matches!(eval("x < a", &[("x", "1"), ("a", "inf")]), Err(EvalError::NotANumber { .. })));
    }

    #[test]
    fn eval_error_copies_at_most_a_clipped_prefix_of_the_value() {
        let value = "é".repeat(100);
        let Err(EvalError::NotANumber { value: copied, .. }) = eval("a > 1", &[("a", &value)]) else {
            panic!("expected NotANumber");
        };
        assert!(copied.len() <= ERROR_VALUE_BYTES_MAX && copied.len() >= ERROR_VALUE_BYTES_MAX - 1);
        assert!(value.starts_with(&copied));
    }

    #[test]
    fn and_stops_at_false_before_a_later_term_can_fail() {
        assert!(!matches("b = 1 AND a > 1", &[("a", "abc"), ("b", "2")]));
        assert!(matches("b = 1 OR a > 1", &[("a", "abc"), ("b", "1")]));
        assert!(eval("b = 1 OR a > 1", &[("a", "abc"), ("b", "2")]).is_err());
    }

    #[test]
    fn boolean_literals_compare_with_true_or_false_in_any_case() {
        assert!(matches("flag = TRUE", &[("flag", "True")]));
        assert!(matches("FALSE = flag", &[("flag", "false")]));
        assert!(matches("flag <> true", &[("flag", "FALSE")]));
        assert!(matches("flag", &[("flag", "TRUE")]));
        assert!(matches("TRUE", &[]));
        assert!(!matches("NOT TRUE", &[]));
        let expected = EvalError::NotABoolean { property: "flag".into(), value: "yes".into() };
        assert_eq!(eval("flag = TRUE", &[("flag", "yes")]), Err(expected.clone()));
        assert_eq!(eval("flag", &[("flag", "yes")]), Err(expected));
    }

    #[test]
    fn doubled_quote_in_a_string_is_one_quote() {
        assert!(matches("a = 'it''s'", &[("a", "it's")]));
        assert!(matches("a = ''''", &[("a", "'")]));
        assert!(matches("a = ''", &[("a", "")]));
        assert!(matches("a = 'héllo'", &[("a", "héllo")]));
    }

    #[test]
    fn comments_are_ignored() {
        let expr = "-- leading\n a = 1 /* inline ' \n */ AND b = 2 -- trailing";
        assert!(matches(expr, &[("a", "1"), ("b", "2")]));
        assert_eq!(parse_error("a = 1 /* never closed").at, 6);
        assert_eq!(parse_error("-- only a comment").message, "empty expression");
    }

    #[test]
    fn keywords_are_case_insensitive() {
        let expr = "a Between 1 aNd 3 And TAGS iN ('x') oR b is NOT null Or c ContainS 'q' AND d = True";
        assert!(matches(expr, &[("a", "2"), ("TAGS", "x")]));
        assert!(matches(expr, &[("b", "")]));
    }

    #[test]
    fn and_binds_tighter_than_or_and_not_tighter_than_and() {
        let props = [("a", "1"), ("b", "0"), ("c", "0")];
        assert!(matches("a=1 OR b=1 AND c=1", &props));
        assert!(!matches("(a=1 OR b=1) AND c=1", &props));
        assert!(matches("NOT a = 2 AND b = 0", &props));
        assert!(!matches("NOT (a = 1 AND b = 1) AND c = 1", &props));
    }

    #[test]
    fn identifiers_allow_digits_underscore_dollar_and_dots() {
        assert!(matches("user.id = 5 AND $x_1 = 'y'", &[("user.id", "5"), ("$x_1", "y")]));
    }

    #[test]
    fn literal_comparisons_are_folded_and_type_checked_at_parse_time() {
        assert!(matches("1 = 1.0", &[]));
        assert!(matches("'5' > 4", &[]));
        assert!(!matches("'a' = 'b'", &[]));
        assert!(matches("2 BETWEEN 1 AND 3", &[]));
        assert!(matches("'abc' CONTAINS 'b'", &[]));
        assert!(matches("'x' IS NOT NULL", &[]));
        assert_eq!(parse_error("'abc' = 1").at, 0);
        assert_eq!(parse_error("TRUE = 1").at, 0);
        assert_eq!(parse_error("'abc' BETWEEN 1 AND 2").at, 0);
        assert_eq!(parse_error("a < 'abc'").at, 0);
        assert_eq!(parse_error("a > TRUE").at, 0);
        assert_eq!(parse_error("1 CONTAINS 'x'").at, 0);
    }

    #[test]
    fn syntax_errors_report_where_they_are() {
        assert_eq!(parse_error("a = 'open").at, 4);
        assert_eq!(parse_error("").message, "empty expression");
        assert_eq!(parse_error("a = 1 b = 2").at, 6);
        assert_eq!(parse_error("a = ").at, 4);
        assert_eq!(parse_error("(a = 1").at, 6);
        assert_eq!(parse_error("a = NULL").at, 4);
        assert_eq!(parse_error("a LIKE 'x'").at, 2);
        assert_eq!(parse_error("a = 0x1F").at, 5);
        assert_eq!(parse_error("a = 017").at, 4);
        assert_eq!(parse_error("a = 9223372036854775808").at, 4);
        assert_eq!(parse_error("a = 99999999999999999999").at, 4);
        assert_eq!(parse_error("a = 1e999").at, 4);
        assert_eq!(parse_error("a = -b").at, 5);
        assert_eq!(parse_error("a == 1").at, 3);
        assert_eq!(parse_error("a = 1 # x").at, 6);
        assert_eq!(parse_error("a IN ()").at, 6);
        assert_eq!(parse_error("a IN ('x', 1)").at, 11);
        assert_eq!(parse_error("a NOT = 1").at, 6);
        assert_eq!(parse_error("5").at, 1);
    }

    #[test]
    fn in_requires_a_property_on_the_left() {
        let error = parse_error("'TagA' IN ('TagA')");
        assert_eq!(error.at, 0);
        assert!(error.message.contains("must be a property"), "{error}");
    }

    #[test]
    fn between_with_reversed_bounds_is_a_parse_error() {
        let error = parse_error("a BETWEEN 3 AND 0");
        assert_eq!(error.at, 10);
        assert!(error.message.contains("reversed"), "{error}");
        assert!(SqlFilter::parse("a BETWEEN 2.5 AND 2").is_err());
        assert!(SqlFilter::parse("a BETWEEN -3 AND -4").is_err());
    }

    #[test]
    fn expression_at_byte_limit_parses_and_one_byte_more_fails() {
        let filler = |n: usize| format!("a = '{}'", "x".repeat(n - "a = ''".len()));
        assert!(SqlFilter::parse(&filler(EXPRESSION_BYTES_MAX)).is_ok());
        let error = parse_error(&filler(EXPRESSION_BYTES_MAX + 1));
        assert_eq!(error.at, EXPRESSION_BYTES_MAX);
    }

    #[test]
    fn nesting_at_depth_limit_parses_and_one_level_deeper_fails() {
        let parens = |n: usize| format!("{}a = 1{}", "(".repeat(n), ")".repeat(n));
        assert!(matches(&parens(NESTING_DEPTH_MAX), &[("a", "1")]));
        assert_eq!(parse_error(&parens(NESTING_DEPTH_MAX + 1)).at, NESTING_DEPTH_MAX);

        let nots = |n: usize| format!("{}a = 1", "NOT ".repeat(n));
        assert!(matches(&nots(NESTING_DEPTH_MAX), &[("a", "1")]), "an even number of NOTs cancels");
        assert_eq!(parse_error(&nots(NESTING_DEPTH_MAX + 1)).at, 4 * NESTING_DEPTH_MAX);

        let mixed =
            format!("{}a = 1{}", "NOT (".repeat(NESTING_DEPTH_MAX / 2 + 1), ")".repeat(NESTING_DEPTH_MAX / 2 + 1));
        assert!(SqlFilter::parse(&mixed).is_err());
    }

    #[test]
    fn long_and_chain_is_not_nesting() {
        let expr = vec!["a=1"; 500].join(" AND ");
        assert!(matches(&expr, &[("a", "1")]));
    }

    #[test]
    fn in_list_at_limit_parses_and_one_value_more_fails() {
        let list = |n: usize| {
            let values: Vec<String> = (0..n).map(|i| format!("'{i}'")).collect();
            format!("a IN ({})", values.join(","))
        };
        assert!(matches(&list(IN_LIST_MAX), &[("a", "255")]));
        let expr = list(IN_LIST_MAX + 1);
        let error = parse_error(&expr);
        assert_eq!(expr.get(error.at..), Some("'256')"));
    }

    #[test]
    fn evaluates_against_a_property_map() {
        let props: HashMap<String, String> = [("TAGS".to_owned(), "TagA".to_owned())].into();
        let filter = SqlFilter::parse("TAGS = 'TagA'").expect("parses");
        assert_eq!(filter.clone().evaluate(|name| props.get(name).map(String::as_str)), Ok(true));
    }

    #[test]
    fn garbage_input_never_panics() {
        const VALID: [&str; 4] = [
            "a between -1.5e3 and 3L AND (b = 'it''s' OR NOT c IN ('x','y')) -- c",
            "TAGS NOT CONTAINS 'é' /* x */ OR region IS NOT NULL AND flag = TRUE",
            "(((a <> 1))) or b >= .5 and c STARTSWITH 'q' and d ENDSWITH ''",
            "user.$id NOT BETWEEN 1 AND 2 OR x < '9' OR 'a' = 'a' OR FALSE",
        ];
        const NOISE: [&str; 18] =
            ["", "'", "(", ")", "-", "--", "/*", "*/", ".", "e", "L", "é", ",", "<", "NOT", "0", "9e", " AND "];
        let props = [("a", "1"), ("b", "x"), ("c", "2.5"), ("TAGS", "é"), ("flag", "maybe"), ("user.$id", "")];
        let run = |expr: &str| {
            if let Ok(filter) = SqlFilter::parse(expr) {
                let _ = filter.evaluate(|name| props.iter().find(|(k, _)| *k == name).map(|(_, v)| *v));
            }
        };
        // A fixed seed makes any failure replayable.
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut random = move |bound: usize| {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            (seed % bound as u64) as usize
        };
        for expr in VALID {
            let cuts: Vec<usize> = (0..=expr.len()).filter(|&i| expr.is_char_boundary(i)).collect();
            for &i in &cuts {
                run(&expr[..i]);
                run(&expr[i..]);
                for noise in NOISE {
                    run(&format!("{}{noise}{}", &expr[..i], &expr[i..]));
                }
            }
            for _ in 0..2000 {
                let (i, j) = (cuts[random(cuts.len())], cuts[random(cuts.len())]);
                let (i, j) = (i.min(j), i.max(j));
                run(&format!("{}{}{}", &expr[..i], NOISE[random(NOISE.len())], &expr[j..]));
            }
        }
    }
}
