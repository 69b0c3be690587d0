//! nf_tables messages: tables, chains and rules written in one batch (one kernel
//! transaction) per operation, and rule listings, without running `nft` or `iptables`.
//! Rules are built from the few expressions the plugins use; their comments are stored as
//! `nft` stores them, so `nft list` shows them.

use netlink_packet_core::{NLA_F_NESTED, NLM_F_ACK, NLM_F_APPEND, NLM_F_CREATE, NLM_F_DUMP};
use netlink_sys::protocols::NETLINK_NETFILTER;

use super::socket::{begin_message, end_message, Socket, HEADER_LEN};
use super::{failed, Result};

const NFNL_SUBSYS_NFTABLES: u16 = 10;
const NFNL_MSG_BATCH_BEGIN: u16 = 0x10;
const NFNL_MSG_BATCH_END: u16 = 0x11;

const NFT_MSG_NEWTABLE: u16 = 0;
const NFT_MSG_DELTABLE: u16 = 2;
const NFT_MSG_NEWCHAIN: u16 = 3;
const NFT_MSG_GETCHAIN: u16 = 4;
const NFT_MSG_DELCHAIN: u16 = 5;
const NFT_MSG_NEWRULE: u16 = 6;
const NFT_MSG_GETRULE: u16 = 7;
const NFT_MSG_DELRULE: u16 = 8;
const NFT_MSG_NEWSET: u16 = 9;
const NFT_MSG_NEWSETELEM: u16 = 12;
const NFT_MSG_GETSETELEM: u16 = 13;
const NFT_MSG_DELSETELEM: u16 = 14;

const NFTA_TABLE_NAME: u16 = 1;
const NFTA_CHAIN_TABLE: u16 = 1;
const NFTA_CHAIN_NAME: u16 = 3;
const NFTA_CHAIN_HOOK: u16 = 4;
const NFTA_CHAIN_POLICY: u16 = 5;
const NFTA_CHAIN_TYPE: u16 = 7;
const NFTA_HOOK_HOOKNUM: u16 = 1;
const NFTA_HOOK_PRIORITY: u16 = 2;
const NFTA_RULE_TABLE: u16 = 1;
const NFTA_RULE_CHAIN: u16 = 2;
const NFTA_RULE_HANDLE: u16 = 3;
const NFTA_RULE_EXPRESSIONS: u16 = 4;
const NFTA_RULE_USERDATA: u16 = 7;
const NFTA_LIST_ELEM: u16 = 1;
const NFTA_SET_TABLE: u16 = 1;
const NFTA_SET_NAME: u16 = 2;
const NFTA_SET_FLAGS: u16 = 3;
const NFTA_SET_KEY_TYPE: u16 = 4;
const NFTA_SET_KEY_LEN: u16 = 5;
const NFTA_SET_DATA_TYPE: u16 = 6;
const NFTA_SET_DATA_LEN: u16 = 7;
const NFTA_SET_ID: u16 = 10;
const NFT_SET_MAP: u32 = 0x8;
const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
const NFTA_SET_ELEM_LIST_SET: u16 = 2;
const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
const NFTA_SET_ELEM_KEY: u16 = 1;
const NFTA_SET_ELEM_DATA: u16 = 2;
const NFTA_SET_ELEM_USERDATA: u16 = 6;
/// Elements per message: a message's element list is one attribute, whose length is 16 bits.
const ELEMENTS_PER_MESSAGE: usize = 200;
const NFTA_EXPR_NAME: u16 = 1;
const NFTA_EXPR_DATA: u16 = 2;
const NFTA_DATA_VALUE: u16 = 1;
const NFTA_DATA_VERDICT: u16 = 2;
const NFTA_VERDICT_CODE: u16 = 1;
const NFTA_VERDICT_CHAIN: u16 = 2;
/// The type `nft` gives a rule comment inside the rule's user data.
const UDATA_RULE_COMMENT: u8 = 0;

/// The first general-purpose register; every rule here needs only one.
const REGISTER: u32 = 1;
const VERDICT_REGISTER: u32 = 0;

/// Address families of nf_tables tables.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    Inet = 1,
    Ip = 2,
    Bridge = 7,
    Ip6 = 10,
}

/// Protocol values of `meta nfproto`.
pub const NFPROTO_IPV4: u8 = 2;
pub const NFPROTO_IPV6: u8 = 10;

/// Meta keys used here.
pub const META_NFPROTO: u32 = 15;
pub const META_L4PROTO: u32 = 16;
pub const META_IIFNAME: u32 = 6;

/// Registers as the kernel numbers them: the first 16-byte one, and the 4-byte ones (a
/// concatenation takes consecutive 4-byte registers, each field rounded up to 4 bytes).
pub const REG_1: u32 = 1;
pub const REG32_00: u32 = 8;

/// nft's type ids, which `nft list` prints keys and values by (a concatenation's type is
/// its fields' ids, 6 bits each).
pub const TYPE_IPADDR: u32 = 7;
pub const TYPE_IP6ADDR: u32 = 8;
pub const TYPE_INET_PROTOCOL: u32 = 12;
pub const TYPE_INET_SERVICE: u32 = 13;

/// The type id of a concatenation of `types`.
pub fn concat_type(types: &[u32]) -> u32 {
    types.iter().fold(0, |id, t| (id << 6) | t)
}

/// Payload bases.
pub const LINK_HEADER: u32 = 0;
pub const NETWORK_HEADER: u32 = 1;
pub const TRANSPORT_HEADER: u32 = 2;

/// `ct status` bit of a connection whose destination was rewritten.
pub const CT_STATUS_DNAT: u32 = 0x20;
/// `fib daddr type` value of an address of this host.
pub const RTN_LOCAL: u32 = 2;

/// What a rule does when it matches.
#[derive(Clone, Debug)]
pub enum Verdict {
    Drop,
    Return,
    Jump(String),
    Goto(String),
}

/// The expressions the plugins' rules are made of; each loads into or reads the one
/// register.
#[derive(Clone, Debug)]
pub enum Expr {
    Meta(u32),
    Payload {
        base: u32,
        offset: u32,
        len: u32,
    },
    /// register &= mask
    Mask(Vec<u8>),
    Equal(Vec<u8>),
    NotEqual(Vec<u8>),
    Masquerade,
    Verdict(Verdict),
    /// A meta key loaded into the register given.
    MetaInto(u32, u32),
    /// A header field loaded into the register given.
    PayloadInto {
        base: u32,
        offset: u32,
        len: u32,
        register: u32,
    },
    /// `ct status`.
    CtStatus,
    /// `fib daddr type`.
    FibDestinationType,
    /// A lookup of the key starting at `key` in the set; for a map, its value goes to
    /// `value` (a miss ends the rule).
    Lookup {
        set: String,
        key: u32,
        value: Option<u32>,
    },
    /// DNAT to the address in register `address` and the port in register `port`, of the
    /// nfproto `family`.
    Dnat {
        family: u8,
        address: u32,
        port: u32,
    },
}

/// One element of a set or map: its key, its value (maps only) and its comment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Element {
    pub key: Vec<u8>,
    pub value: Option<Vec<u8>>,
    pub comment: Option<String>,
}

/// A set or map to create: its key's type id and length, and for a map its value's.
pub struct SetSpec<'a> {
    pub name: &'a str,
    pub key_type: u32,
    pub key_len: u32,
    pub value: Option<(u32, u32)>,
}

/// A chain hooked into the packet path.
pub struct BaseChain {
    pub kind: &'static str,
    pub hook: u32,
    pub priority: i32,
}

/// A rule as listed: its handle and comment.
#[derive(Debug, Clone)]
pub struct ListedRule {
    pub handle: u64,
    pub comment: Option<String>,
}

/// Netlink attributes appended to a message buffer.
struct Attributes<'a>(&'a mut Vec<u8>);

impl Attributes<'_> {
    fn put(&mut self, kind: u16, data: &[u8]) {
        let length = 4 + data.len();
        self.0.extend_from_slice(&(length as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len() + (4 - length % 4) % 4, 0);
    }

    fn text(&mut self, kind: u16, text: &str) {
        let mut data = text.as_bytes().to_vec();
        data.push(0);
        self.put(kind, &data);
    }

    fn be32(&mut self, kind: u16, value: u32) {
        self.put(kind, &value.to_be_bytes());
    }

    fn nest(&mut self, kind: u16, fill: impl FnOnce(&mut Attributes)) {
        let start = self.0.len();
        self.0.extend_from_slice(&[0, 0]);
        self.0.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        fill(&mut Attributes(self.0));
        let length = (self.0.len() - start) as u16;
        self.0[start..start + 2].copy_from_slice(&length.to_ne_bytes());
    }

    fn expression(&mut self, name: &str, data: impl FnOnce(&mut Attributes)) {
        self.nest(NFTA_LIST_ELEM, |e| {
            e.text(NFTA_EXPR_NAME, name);
            e.nest(NFTA_EXPR_DATA, data);
        });
    }

    fn compare(&mut self, op: u32, value: &[u8]) {
        self.expression("cmp", |a| {
            a.be32(1, REGISTER); // NFTA_CMP_SREG
            a.be32(2, op); // NFTA_CMP_OP
            a.nest(3, |d| d.put(NFTA_DATA_VALUE, value)); // NFTA_CMP_DATA
        });
    }

    fn rule_expression(&mut self, expr: &Expr) {
        match expr {
            Expr::Meta(key) => self.expression("meta", |a| {
                a.be32(2, *key); // NFTA_META_KEY
                a.be32(1, REGISTER); // NFTA_META_DREG
            }),
            Expr::Payload { base, offset, len } => self.expression("payload", |a| {
                a.be32(1, REGISTER); // NFTA_PAYLOAD_DREG
                a.be32(2, *base);
                a.be32(3, *offset);
                a.be32(4, *len);
            }),
            Expr::Mask(mask) => self.expression("bitwise", |a| {
                a.be32(1, REGISTER); // NFTA_BITWISE_SREG
                a.be32(2, REGISTER); // NFTA_BITWISE_DREG
                a.be32(3, mask.len() as u32);
                a.nest(4, |d| d.put(NFTA_DATA_VALUE, mask));
                a.nest(5, |d| d.put(NFTA_DATA_VALUE, &vec![0; mask.len()]));
            }),
            Expr::Equal(value) => self.compare(0, value),
            Expr::NotEqual(value) => self.compare(1, value),
            Expr::Masquerade => self.nest(NFTA_LIST_ELEM, |e| e.text(NFTA_EXPR_NAME, "masq")),
            Expr::MetaInto(key, register) => self.expression("meta", |a| {
                a.be32(2, *key); // NFTA_META_KEY
                a.be32(1, *register); // NFTA_META_DREG
            }),
            Expr::PayloadInto { base, offset, len, register } => self.expression("payload", |a| {
                a.be32(1, *register); // NFTA_PAYLOAD_DREG
                a.be32(2, *base);
                a.be32(3, *offset);
                a.be32(4, *len);
            }),
            Expr::CtStatus => self.expression("ct", |a| {
                a.be32(2, 2); // NFTA_CT_KEY: NFT_CT_STATUS
                a.be32(1, REGISTER); // NFTA_CT_DREG
            }),
            Expr::FibDestinationType => self.expression("fib", |a| {
                a.be32(1, REGISTER); // NFTA_FIB_DREG
                a.be32(2, 3); // NFTA_FIB_RESULT: NFT_FIB_RESULT_ADDRTYPE
                a.be32(3, 2); // NFTA_FIB_FLAGS: NFTA_FIB_F_DADDR
            }),
            Expr::Lookup { set, key, value } => self.expression("lookup", |a| {
                a.text(1, set); // NFTA_LOOKUP_SET
                a.be32(2, *key); // NFTA_LOOKUP_SREG
                if let Some(value) = value {
                    a.be32(3, *value); // NFTA_LOOKUP_DREG
                }
            }),
            Expr::Dnat { family, address, port } => self.expression("nat", |a| {
                a.be32(1, 1); // NFTA_NAT_TYPE: NFT_NAT_DNAT
                a.be32(2, u32::from(*family)); // NFTA_NAT_FAMILY
                a.be32(3, *address); // NFTA_NAT_REG_ADDR_MIN
                a.be32(5, *port); // NFTA_NAT_REG_PROTO_MIN
            }),
            Expr::Verdict(verdict) => self.expression("immediate", |a| {
                a.be32(1, VERDICT_REGISTER); // NFTA_IMMEDIATE_DREG
                a.nest(2, |d| {
                    d.nest(NFTA_DATA_VERDICT, |v| {
                        let (code, chain): (i32, Option<&str>) = match verdict {
                            Verdict::Drop => (0, None),
                            Verdict::Return => (-5, None),
                            Verdict::Jump(c) => (-3, Some(c)),
                            Verdict::Goto(c) => (-4, Some(c)),
                        };
                        v.be32(NFTA_VERDICT_CODE, code as u32);
                        if let Some(chain) = chain {
                            v.text(NFTA_VERDICT_CHAIN, chain);
                        }
                    })
                });
            }),
        }
    }
}

/// Starts an nfnetlink message: the netlink header, then the family and resource id.
fn header(buffer: &mut Vec<u8>, kind: u16, flags: u16, sequence: u32, family: u8, resource: u16) -> usize {
    let start = begin_message(buffer, kind, flags, sequence);
    buffer.extend_from_slice(&[family, 0]);
    buffer.extend_from_slice(&resource.to_be_bytes());
    start
}

/// What follows an nfnetlink message's headers: its attributes.
pub(super) fn attributes_of(answer: &[u8]) -> &[u8] {
    answer.get(HEADER_LEN + 4..).unwrap_or_default()
}

/// The attributes of one netlink message payload (after the nfgenmsg header).
pub(super) fn parse_attributes(mut data: &[u8]) -> Vec<(u16, &[u8])> {
    let mut out = Vec::new();
    while data.len() >= 4 {
        let length = u16::from_ne_bytes([data[0], data[1]]) as usize;
        let kind = u16::from_ne_bytes([data[2], data[3]]) & 0x3fff;
        if length < 4 || length > data.len() {
            break;
        }
        out.push((kind, &data[4..length]));
        data = &data[((length + 3) & !3).min(data.len())..];
    }
    out
}

fn text_of(data: &[u8]) -> String {
    String::from_utf8_lossy(data.split(|b| *b == 0).next().unwrap_or_default()).into_owned()
}

/// A rule comment in `nft`'s user-data layout: type, length, text with its NUL.
fn comment_data(comment: &str) -> Vec<u8> {
    let text: Vec<u8> = comment.bytes().take(127).collect();
    let mut data = vec![UDATA_RULE_COMMENT, (text.len() + 1) as u8];
    data.extend_from_slice(&text);
    data.push(0);
    data
}

fn comment_of(data: &[u8]) -> Option<String> {
    let mut rest = data;
    while rest.len() >= 2 {
        let (kind, length) = (rest[0], rest[1] as usize);
        let value = rest.get(2..2 + length)?;
        if kind == UDATA_RULE_COMMENT {
            return Some(text_of(value));
        }
        rest = &rest[2 + length..];
    }
    None
}

/// One transaction: everything added to it is applied together or not at all.
pub struct Batch {
    buffer: Vec<u8>,
    /// What each message does, by sequence number offset, for error messages.
    steps: Vec<String>,
}

impl Batch {
    pub fn new() -> Batch {
        let mut buffer = Vec::with_capacity(4096);
        let start = header(&mut buffer, NFNL_MSG_BATCH_BEGIN, 0, 0, 0, NFNL_SUBSYS_NFTABLES);
        end_message(&mut buffer, start);
        Batch { buffer, steps: Vec::new() }
    }

    fn message(&mut self, kind: u16, flags: u16, family: Family, step: String, fill: impl FnOnce(&mut Attributes)) {
        self.steps.push(step);
        let sequence = self.steps.len() as u32;
        let start =
            header(&mut self.buffer, (NFNL_SUBSYS_NFTABLES << 8) | kind, NLM_F_ACK | flags, sequence, family as u8, 0);
        fill(&mut Attributes(&mut self.buffer));
        end_message(&mut self.buffer, start);
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// Creates the table unless it exists.
    pub fn add_table(&mut self, family: Family, table: &str) {
        self.message(NFT_MSG_NEWTABLE, NLM_F_CREATE, family, format!("create table {table}"), |a| {
            a.text(NFTA_TABLE_NAME, table)
        });
    }

    /// Creates the chain unless it exists; a base chain accepts what it does not match.
    pub fn add_chain(&mut self, family: Family, table: &str, chain: &str, base: Option<&BaseChain>) {
        self.message(NFT_MSG_NEWCHAIN, NLM_F_CREATE, family, format!("create chain {table} {chain}"), |a| {
            a.text(NFTA_CHAIN_TABLE, table);
            a.text(NFTA_CHAIN_NAME, chain);
            if let Some(base) = base {
                a.nest(NFTA_CHAIN_HOOK, |h| {
                    h.be32(NFTA_HOOK_HOOKNUM, base.hook);
                    h.be32(NFTA_HOOK_PRIORITY, base.priority as u32);
                });
                a.be32(NFTA_CHAIN_POLICY, 1);
                a.text(NFTA_CHAIN_TYPE, base.kind);
            }
        });
    }

    /// Removes the table and everything in it.
    pub fn delete_table(&mut self, family: Family, table: &str) {
        self.message(NFT_MSG_DELTABLE, 0, family, format!("delete table {table}"), |a| a.text(NFTA_TABLE_NAME, table));
    }

    /// Creates the set (a map when it has a value type) unless it exists.
    pub fn add_set(&mut self, family: Family, table: &str, set: &SetSpec) {
        // The kernel wants an id by which later messages of the batch could name the set.
        let id = self.steps.len() as u32 + 1;
        self.message(NFT_MSG_NEWSET, NLM_F_CREATE, family, format!("create set {table} {}", set.name), |a| {
            a.text(NFTA_SET_TABLE, table);
            a.text(NFTA_SET_NAME, set.name);
            a.be32(NFTA_SET_FLAGS, if set.value.is_some() { NFT_SET_MAP } else { 0 });
            a.be32(NFTA_SET_KEY_TYPE, set.key_type);
            a.be32(NFTA_SET_KEY_LEN, set.key_len);
            if let Some((value_type, value_len)) = set.value {
                a.be32(NFTA_SET_DATA_TYPE, value_type);
                a.be32(NFTA_SET_DATA_LEN, value_len);
            }
            a.be32(NFTA_SET_ID, id);
        });
    }

    /// Adds elements to the set; with `exclusive`, a key already there refuses the whole
    /// transaction (EEXIST).
    pub fn add_elements(&mut self, family: Family, table: &str, set: &str, elements: &[Element], exclusive: bool) {
        let flags = NLM_F_CREATE | if exclusive { netlink_packet_core::NLM_F_EXCL } else { 0 };
        for chunk in elements.chunks(ELEMENTS_PER_MESSAGE) {
            self.elements(NFT_MSG_NEWSETELEM, flags, family, table, set, chunk, "add elements to");
        }
    }

    /// Removes elements (by key) from the set.
    pub fn delete_elements(&mut self, family: Family, table: &str, set: &str, elements: &[Element]) {
        for chunk in elements.chunks(ELEMENTS_PER_MESSAGE) {
            self.elements(NFT_MSG_DELSETELEM, 0, family, table, set, chunk, "remove elements from");
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn elements(
        &mut self,
        kind: u16,
        flags: u16,
        family: Family,
        table: &str,
        set: &str,
        elements: &[Element],
        doing: &str,
    ) {
        self.message(kind, flags, family, format!("{doing} set {table} {set}"), |a| {
            a.text(NFTA_SET_ELEM_LIST_TABLE, table);
            a.text(NFTA_SET_ELEM_LIST_SET, set);
            a.nest(NFTA_SET_ELEM_LIST_ELEMENTS, |list| {
                for element in elements {
                    list.nest(NFTA_LIST_ELEM, |e| {
                        e.nest(NFTA_SET_ELEM_KEY, |k| k.put(NFTA_DATA_VALUE, &element.key));
                        if kind == NFT_MSG_NEWSETELEM {
                            if let Some(value) = &element.value {
                                e.nest(NFTA_SET_ELEM_DATA, |d| d.put(NFTA_DATA_VALUE, value));
                            }
                            if let Some(comment) = &element.comment {
                                e.put(NFTA_SET_ELEM_USERDATA, &comment_data(comment));
                            }
                        }
                    });
                }
            });
        });
    }

    /// Removes every rule of the chain.
    pub fn flush_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.message(NFT_MSG_DELRULE, 0, family, format!("flush chain {table} {chain}"), |a| {
            a.text(NFTA_RULE_TABLE, table);
            a.text(NFTA_RULE_CHAIN, chain);
        });
    }

    /// Removes the chain and its rules (nothing may jump to it any more).
    pub fn delete_chain(&mut self, family: Family, table: &str, chain: &str) {
        self.message(NFT_MSG_DELCHAIN, 0, family, format!("delete chain {table} {chain}"), |a| {
            a.text(NFTA_CHAIN_TABLE, table);
            a.text(NFTA_CHAIN_NAME, chain);
        });
    }

    /// Appends a rule to the chain.
    pub fn add_rule(&mut self, family: Family, table: &str, chain: &str, exprs: &[Expr], comment: Option<&str>) {
        self.message(
            NFT_MSG_NEWRULE,
            NLM_F_CREATE | NLM_F_APPEND,
            family,
            format!("add a rule to {table} {chain}"),
            |a| {
                a.text(NFTA_RULE_TABLE, table);
                a.text(NFTA_RULE_CHAIN, chain);
                a.nest(NFTA_RULE_EXPRESSIONS, |list| {
                    for expr in exprs {
                        list.rule_expression(expr);
                    }
                });
                if let Some(comment) = comment {
                    a.put(NFTA_RULE_USERDATA, &comment_data(comment));
                }
            },
        );
    }

    pub fn delete_rule(&mut self, family: Family, table: &str, chain: &str, handle: u64) {
        self.message(NFT_MSG_DELRULE, 0, family, format!("delete rule {handle} of {table} {chain}"), |a| {
            a.text(NFTA_RULE_TABLE, table);
            a.text(NFTA_RULE_CHAIN, chain);
            a.put(NFTA_RULE_HANDLE, &handle.to_be_bytes());
        });
    }
}

impl Default for Batch {
    fn default() -> Self {
        Batch::new()
    }
}

/// An nf_tables client.
pub struct NftClient {
    socket: Socket,
}

impl NftClient {
    /// A client in the current network namespace.
    pub fn open() -> Result<NftClient> {
        Ok(NftClient { socket: Socket::open(NETLINK_NETFILTER, "nf_tables")? })
    }

    /// Applies the batch as one transaction.
    pub fn commit(&mut self, mut batch: Batch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let end = (batch.steps.len() + 1) as u32;
        let start = header(&mut batch.buffer, NFNL_MSG_BATCH_END, 0, end, 0, NFNL_SUBSYS_NFTABLES);
        end_message(&mut batch.buffer, start);
        match self.socket.send_batch(&batch.buffer, "cannot send nf_tables rules")? {
            None => Ok(()),
            Some((sequence, errno)) => {
                let step = batch
                    .steps
                    .get((sequence as usize).wrapping_sub(1))
                    .map(String::as_str)
                    .unwrap_or("apply the rules");
                Err(failed(&format!("nf_tables refused to {step}"), errno))
            }
        }
    }

    /// Sends one request and returns the answers up to the end of the dump or the
    /// acknowledgement.
    fn query(
        &mut self,
        kind: u16,
        flags: u16,
        family: Family,
        what: &str,
        fill: impl FnOnce(&mut Attributes),
    ) -> Result<Vec<Vec<u8>>> {
        let sequence = self.socket.next_sequence();
        let mut request = Vec::with_capacity(256);
        let start = header(&mut request, (NFNL_SUBSYS_NFTABLES << 8) | kind, flags, sequence, family as u8, 0);
        fill(&mut Attributes(&mut request));
        end_message(&mut request, start);
        self.socket.request(&request, sequence, what)
    }

    /// The rules of a chain with their handles and comments; none when the table or the
    /// chain does not exist.
    pub fn rules(&mut self, family: Family, table: &str, chain: &str) -> Result<Vec<ListedRule>> {
        let what = format!("cannot list the rules of {table} {chain}");
        let answers = match self.query(NFT_MSG_GETRULE, NLM_F_DUMP, family, &what, |a| {
            a.text(NFTA_RULE_TABLE, table);
            a.text(NFTA_RULE_CHAIN, chain);
        }) {
            Ok(answers) => answers,
            Err(e) if e.errno == libc::ENOENT => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let mut rules = Vec::new();
        for answer in &answers {
            let attributes = parse_attributes(attributes_of(answer));
            // A dump filtered by table and chain may still carry other chains' rules on
            // older kernels; keep only this chain's.
            let of_chain = attributes.iter().any(|(k, v)| *k == NFTA_RULE_CHAIN && text_of(v) == chain)
                && attributes.iter().any(|(k, v)| *k == NFTA_RULE_TABLE && text_of(v) == table);
            let handle = attributes
                .iter()
                .find(|(k, v)| *k == NFTA_RULE_HANDLE && v.len() == 8)
                .map(|(_, v)| u64::from_be_bytes(v[..8].try_into().unwrap()));
            if let (true, Some(handle)) = (of_chain, handle) {
                let comment =
                    attributes.iter().find(|(k, _)| *k == NFTA_RULE_USERDATA).and_then(|(_, v)| comment_of(v));
                rules.push(ListedRule { handle, comment });
            }
        }
        Ok(rules)
    }

    /// The elements of a set or map; none when the table or the set does not exist.
    pub fn elements(&mut self, family: Family, table: &str, set: &str) -> Result<Vec<Element>> {
        let what = format!("cannot list the elements of {table} {set}");
        let answers = match self.query(NFT_MSG_GETSETELEM, NLM_F_DUMP, family, &what, |a| {
            a.text(NFTA_SET_ELEM_LIST_TABLE, table);
            a.text(NFTA_SET_ELEM_LIST_SET, set);
        }) {
            Ok(answers) => answers,
            Err(e) if e.errno == libc::ENOENT => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let value_of = |nested: &[u8]| {
            parse_attributes(nested).into_iter().find(|(k, _)| *k == NFTA_DATA_VALUE).map(|(_, v)| v.to_vec())
        };
        let mut elements = Vec::new();
        for answer in &answers {
            for (kind, list) in parse_attributes(attributes_of(answer)) {
                if kind != NFTA_SET_ELEM_LIST_ELEMENTS {
                    continue;
                }
                for (_, element) in parse_attributes(list) {
                    let mut parsed = Element { key: Vec::new(), value: None, comment: None };
                    for (kind, data) in parse_attributes(element) {
                        match kind {
                            NFTA_SET_ELEM_KEY => parsed.key = value_of(data).unwrap_or_default(),
                            NFTA_SET_ELEM_DATA => parsed.value = value_of(data),
                            NFTA_SET_ELEM_USERDATA => parsed.comment = comment_of(data),
                            _ => {}
                        }
                    }
                    elements.push(parsed);
                }
            }
        }
        Ok(elements)
    }

    /// Whether the chain exists.
    pub fn has_chain(&mut self, family: Family, table: &str, chain: &str) -> Result<bool> {
        let what = format!("cannot look up chain {table} {chain}");
        match self.query(NFT_MSG_GETCHAIN, NLM_F_ACK, family, &what, |a| {
            a.text(NFTA_CHAIN_TABLE, table);
            a.text(NFTA_CHAIN_NAME, chain);
        }) {
            Ok(_) => Ok(true),
            Err(e) if e.errno == libc::ENOENT => Ok(false),
            Err(e) => Err(e),
        }
    }
}

/// Runs `work` with the process's one client, opened on first use (in the namespace of
/// that caller: the plugins use it from the host's) and closed only when the process
/// exits. Closing a socket that removed objects waits until the kernel has released them
/// after an RCU grace period (10-25 ms here); at exit, after the veth removal that DEL
/// waits for anyway, that wait is over.
pub fn with_shared<T>(work: impl FnOnce(&mut NftClient) -> Result<T>) -> Result<T> {
    static SHARED: std::sync::Mutex<Option<NftClient>> = std::sync::Mutex::new(None);
    let mut shared = SHARED.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let client = match shared.as_mut() {
        Some(client) => client,
        None => shared.insert(NftClient::open()?),
    };
    work(client)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comments_round_trip_in_nft_layout() {
        let data = comment_data("name: x");
        assert_eq!(&data[..2], &[0, 8]);
        assert_eq!(comment_of(&data).as_deref(), Some("name: x"));
    }

    #[test]
    fn nested_attributes_carry_their_length() {
        let mut buffer = Vec::new();
        Attributes(&mut buffer).nest(4, |a| a.be32(1, 7));
        assert_eq!(buffer.len(), 12);
        assert_eq!(u16::from_ne_bytes([buffer[0], buffer[1]]), 12);
        assert_eq!(u16::from_ne_bytes([buffer[2], buffer[3]]), 4 | NLA_F_NESTED);
        let parsed = parse_attributes(&buffer);
        assert_eq!(parsed[0].0, 4);
        assert_eq!(parse_attributes(parsed[0].1), vec![(1, &7u32.to_be_bytes()[..])]);
    }
}
