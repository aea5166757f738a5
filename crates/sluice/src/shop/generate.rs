//! The workload generator: the shop's state (products, offers, stock, orders on their
//! way) and the next event, drawn from a seeded random generator. The same seed and
//! the same clock readings give the same events, byte for byte.
//!
//! Time in the shop runs 3,600 times faster than the clock for fulfilment: an order
//! promised "in 2-4 days" is promised 48-96 s after it was placed, shipped 2-30 s
//! after it, and delivered 20-72 s after that; about one delivery in twelve is late.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::fmt::Write;

use serde_json::{Value, json};
use sluice_schema::time::rfc3339;

use super::{OFFER, ORDER, PRODUCT, REVIEW, SHIPMENT, STOCK};

/// One event to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Its event type, an index into `EVENT_TYPES`.
    pub kind: usize,
    /// Its number in the shop's sequence (also the last 12 hex digits of its eid).
    pub seq: u64,
    /// The product it changes, for the kinds the product listing reads.
    pub sku: Option<String>,
    /// The event as JSON text.
    pub body: String,
}

/// The eid's last 12 hex digits: the event's number.
const SEQ_MASK: u64 = 0xffff_ffff_ffff;
/// One hour of the shop's fulfilment, in ms of the clock.
const HOUR_MS: i64 = 1000;

const BRANDS: [&str; 24] = [
    "Aurora",
    "Birchwood",
    "Cobalt",
    "Dune",
    "Ember",
    "Fjord",
    "Granite",
    "Harbor",
    "Indigo",
    "Juniper",
    "Kestrel",
    "Lumen",
    "Meridian",
    "Nomad",
    "Orchid",
    "Pioneer",
    "Quarry",
    "Riverside",
    "Sable",
    "Tundra",
    "Umbra",
    "Vista",
    "Willow",
    "Zephyr",
];
const CATEGORIES: [(&str, &[&str]); 6] = [
    (
        "shoes/sneakers",
        &["Runner", "Court Sneaker", "Trail Shoe", "Slip-On"],
    ),
    (
        "clothing/shirts",
        &["Oxford Shirt", "Linen Shirt", "Polo", "Flannel Shirt"],
    ),
    (
        "clothing/jackets",
        &["Parka", "Rain Jacket", "Bomber", "Puffer Vest"],
    ),
    (
        "home/kitchen",
        &["Chef Knife", "Dutch Oven", "Kettle", "Pour-Over Set"],
    ),
    (
        "sports/outdoor",
        &["Tent", "Daypack", "Sleeping Bag", "Headlamp"],
    ),
    (
        "beauty/care",
        &["Face Cream", "Shampoo", "Beard Oil", "Sunscreen"],
    ),
];
const COLORS: [&str; 10] = [
    "black", "white", "navy", "olive", "red", "sand", "grey", "teal", "brown", "pink",
];
const MATERIALS: [&str; 6] = [
    "cotton",
    "leather",
    "wool",
    "recycled polyester",
    "steel",
    "bamboo",
];
const SIZES: [&str; 6] = ["XS", "S", "M", "L", "XL", "one size"];
const SELLERS: [&str; 8] = [
    "shop-direct",
    "brightdeals",
    "nordic-outlet",
    "urban-goods",
    "the-depot",
    "alpine-trade",
    "coastline",
    "second-chance",
];
const WAREHOUSES: [&str; 3] = ["wh-berlin", "wh-rotterdam", "wh-warsaw"];
const STORES: [&str; 6] = [
    "store-amsterdam",
    "store-hamburg",
    "store-paris",
    "store-milan",
    "store-vienna",
    "store-madrid",
];
const CITIES: [(&str, &str); 6] = [
    ("NL", "Utrecht"),
    ("DE", "Cologne"),
    ("FR", "Lyon"),
    ("IT", "Turin"),
    ("AT", "Graz"),
    ("ES", "Valencia"),
];
const CARRIERS: [&str; 4] = ["DHL", "PostNL", "DPD", "UPS"];

#[derive(Debug)]
struct Product {
    sku: String,
    data: Value,
    /// Indexes into `Shop::offers` and `Shop::stock`.
    offers: Vec<usize>,
    stock: Vec<usize>,
    live: bool,
}

#[derive(Debug)]
struct Offer {
    id: String,
    sku: String,
    seller: &'static str,
    amount: i64,
    condition: &'static str,
    dispatch_days: u32,
    live: bool,
}

#[derive(Debug)]
struct Stock {
    sku: String,
    location: &'static str,
    store: bool,
    qty: i64,
    live: bool,
}

/// A fulfilment step that falls due at a time: (due ms, order number, step).
type Due = Reverse<(i64, u64, Step)>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Step {
    /// Shipped; delivered after `transit` ms.
    Ship {
        promised: i64,
        transit: i64,
    },
    Deliver {
        promised: i64,
        shipped: i64,
    },
}

/// The shop: its state and its random generator.
#[derive(Debug)]
pub struct Shop {
    rng: fastrand::Rng,
    eid_prefix: String,
    seq: u64,
    products: Vec<Product>,
    offers: Vec<Offer>,
    stock: Vec<Stock>,
    fulfilment: BinaryHeap<Due>,
    /// New products' events not yet returned.
    pending: VecDeque<Event>,
    orders: u64,
    reviews: u64,
    /// The last clock reading's RFC 3339 form (events of one tick share it).
    occurred_at: (i64, String),
}

impl Shop {
    /// A shop drawn from `seed`. `run` makes the eids of this run its own (the bus
    /// drops an eid it has seen recently as a retry): the start time, for instance.
    pub fn new(seed: u64, run: u64) -> Shop {
        let mut ids = fastrand::Rng::with_seed(seed ^ run.rotate_left(17));
        let eid_prefix = format!(
            "{:08x}-{:04x}-4{:03x}-8{:03x}-",
            ids.u32(..),
            ids.u16(..),
            ids.u16(..0x1000),
            ids.u16(..0x1000)
        );
        Shop {
            rng: fastrand::Rng::with_seed(seed),
            eid_prefix,
            seq: 0,
            products: Vec::new(),
            offers: Vec::new(),
            stock: Vec::new(),
            fulfilment: BinaryHeap::new(),
            pending: VecDeque::new(),
            orders: 0,
            reviews: 0,
            occurred_at: (i64::MIN, String::new()),
        }
    }

    /// What every eid of this shop starts with (the rest is the event's number).
    pub fn eid_prefix(&self) -> &str {
        &self.eid_prefix
    }

    /// The number of the next event `next` returns.
    pub fn next_seq(&self) -> u64 {
        self.pending.front().map_or(self.seq, |e| e.seq)
    }

    /// The events that put `n` new products in the catalog: each product, its offers,
    /// its stock.
    pub fn catalog(&mut self, n: usize, now_ms: i64) -> Vec<Event> {
        for _ in 0..n {
            self.new_product(now_ms);
        }
        self.pending.drain(..).collect()
    }

    /// The next event of the shop's day at `now_ms` (ms since the epoch).
    pub fn next(&mut self, now_ms: i64) -> Event {
        if let Some(e) = self.pending.pop_front() {
            return e;
        }
        if self.fulfilment.peek().is_some_and(|d| d.0.0 <= now_ms) {
            let Reverse((_, order, step)) = self.fulfilment.pop().expect("peeked");
            return self.fulfil(order, step, now_ms);
        }
        if self.products.is_empty() {
            self.new_product(now_ms);
            return self.pending.pop_front().expect("a new product's events");
        }
        let roll = self.rng.u32(..1000);
        let made = match roll {
            0..450 => self.price_change(now_ms),
            450..770 => self.stock_change(now_ms),
            770..880 => self.order(now_ms),
            880..930 => self.review(now_ms),
            930..985 => self.product_change(now_ms),
            985..999 => {
                self.new_product(now_ms);
                self.pending.pop_front()
            }
            _ => self.discontinue(now_ms),
        };
        // A draw that found nothing to change (say, every offer gone) changes stock.
        made.or_else(|| self.stock_change(now_ms))
            .unwrap_or_else(|| {
                self.new_product(now_ms);
                self.pending.pop_front().expect("a new product's events")
            })
    }

    /// An event of `kind` with the members of the JSON object `fields` and its metadata.
    /// The text is written, not serialized from a `Value`: the benchmarks run the shop
    /// on the machine they measure, and building and serializing a `Value` for every
    /// event was most of what their own process cost.
    fn event(&mut self, kind: usize, sku: Option<&str>, now_ms: i64, fields: &str) -> Event {
        let seq = self.seq;
        self.seq += 1;
        if self.occurred_at.0 != now_ms {
            self.occurred_at = (now_ms, rfc3339(now_ms));
        }
        let members = fields
            .strip_suffix('}')
            .expect("the fields are a JSON object");
        let mut body = String::with_capacity(fields.len() + 100);
        body.push_str(members);
        // The eid prefix (hex and dashes) and the time need no escaping.
        let _ = write!(
            body,
            r#","metadata":{{"eid":"{}{:012x}","occurred_at":"{}"}}}}"#,
            self.eid_prefix,
            seq & SEQ_MASK,
            self.occurred_at.1
        );
        Event {
            kind,
            seq,
            sku: sku.map(String::from),
            body,
        }
    }

    /// A data change event of `kind` whose `data` is the JSON text `data`.
    fn change(&mut self, kind: usize, sku: &str, op: &str, now_ms: i64, data: &str) -> Event {
        let data_type = ["product", "offer", "stock"][kind];
        let fields = format!(r#"{{"data_type":"{data_type}","data_op":"{op}","data":{data}}}"#);
        self.event(kind, Some(sku), now_ms, &fields)
    }

    fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.rng.usize(..items.len())]
    }

    fn new_product(&mut self, now_ms: i64) {
        let n = self.products.len();
        let sku = format!("SKU-{:06}", n + 1);
        let (category, nouns) = self.pick(&CATEGORIES);
        let brand = self.pick(&BRANDS);
        let noun = self.pick(nouns);
        let color = self.pick(&COLORS);
        let images: Vec<String> = (0..self.rng.usize(1..=4))
            .map(|i| format!("https://images.shop.test/{sku}/{i}.jpg"))
            .collect();
        let data = json!({
            "sku": sku, "title": format!("{brand} {noun}"), "brand": brand,
            "category": category,
            "description": format!("A {color} {} {} by {brand}.", self.pick(&MATERIALS), noun.to_lowercase()),
            "attributes": {"color": color, "size": self.pick(&SIZES), "material": self.pick(&MATERIALS)},
            "images": images,
        });
        let e = self.change(PRODUCT, &sku, "C", now_ms, &text(&data));
        self.pending.push_back(e);
        // Offers: one to four sellers, priced around the product's base price.
        let base = i64::from(self.rng.u32(5..300)) * 100;
        let mut sellers = SELLERS.to_vec();
        self.rng.shuffle(&mut sellers);
        let mut offers = Vec::new();
        for seller in sellers.into_iter().take(self.rng.usize(1..=4)) {
            let amount = price_ending(base * i64::from(self.rng.u32(85..=115)) / 100);
            let offer = Offer {
                id: format!("{sku}-{seller}"),
                sku: sku.clone(),
                seller,
                amount,
                condition: if seller == "second-chance" {
                    "refurbished"
                } else {
                    "new"
                },
                dispatch_days: self.rng.u32(0..5),
                live: true,
            };
            offers.push(self.offers.len());
            let e = self.change(OFFER, &sku, "C", now_ms, &offer.data());
            self.pending.push_back(e);
            self.offers.push(offer);
        }
        // Stock: one or two warehouses, up to three stores.
        let mut places: Vec<(&'static str, bool)> = Vec::new();
        let mut wh = WAREHOUSES.to_vec();
        self.rng.shuffle(&mut wh);
        places.extend(
            wh.into_iter()
                .take(self.rng.usize(1..=2))
                .map(|w| (w, false)),
        );
        let mut st = STORES.to_vec();
        self.rng.shuffle(&mut st);
        places.extend(
            st.into_iter()
                .take(self.rng.usize(0..=3))
                .map(|s| (s, true)),
        );
        let mut stock = Vec::new();
        for (location, store) in places {
            let qty = if self.rng.u32(..100) < 8 {
                0
            } else if store {
                i64::from(self.rng.u32(1..15))
            } else {
                i64::from(self.rng.u32(10..200))
            };
            let row = Stock {
                sku: sku.clone(),
                location,
                store,
                qty,
                live: true,
            };
            stock.push(self.stock.len());
            let e = self.change(STOCK, &sku, "C", now_ms, &row.data());
            self.pending.push_back(e);
            self.stock.push(row);
        }
        self.products.push(Product {
            sku,
            data,
            offers,
            stock,
            live: true,
        });
    }

    fn price_change(&mut self, now_ms: i64) -> Option<Event> {
        let i = live(&mut self.rng, &self.offers, |o| o.live)?;
        let pct = i64::from(self.rng.u32(90..=110));
        let offer = &mut self.offers[i];
        offer.amount = price_ending((offer.amount * pct / 100).max(99));
        let (sku, data) = (offer.sku.clone(), offer.data());
        Some(self.change(OFFER, &sku, "U", now_ms, &data))
    }

    fn stock_change(&mut self, now_ms: i64) -> Option<Event> {
        let i = live(&mut self.rng, &self.stock, |s| s.live)?;
        let restock = self.rng.u32(..100) < 12;
        let delta = match (self.stock[i].store, restock) {
            (false, true) => i64::from(self.rng.u32(50..200)),
            (true, true) => i64::from(self.rng.u32(5..12)),
            (_, false) => -i64::from(self.rng.u32(1..4)),
        };
        let row = &mut self.stock[i];
        row.qty = (row.qty + delta).max(0);
        let (sku, data) = (row.sku.clone(), row.data());
        Some(self.change(STOCK, &sku, "U", now_ms, &data))
    }

    fn order(&mut self, now_ms: i64) -> Option<Event> {
        let mut lines = Vec::new();
        let mut total = 0;
        for _ in 0..self.rng.usize(1..=3) {
            let Some(p) = live(&mut self.rng, &self.products, |p| p.live) else {
                continue;
            };
            let offers: Vec<usize> = self.products[p].offers.clone();
            let live: Vec<usize> = offers
                .into_iter()
                .filter(|&o| self.offers[o].live)
                .collect();
            if live.is_empty() {
                continue;
            }
            let o = &self.offers[live[self.rng.usize(..live.len())]];
            let qty = if self.rng.u32(..10) == 0 { 2 } else { 1 };
            total += o.amount * qty;
            lines.push(json!({
                "sku": o.sku, "offer_id": o.id, "seller": o.seller, "qty": qty,
                "unit_price": {"amount": o.amount, "currency": "EUR"}
            }));
        }
        if lines.is_empty() {
            return None;
        }
        self.orders += 1;
        let n = self.orders;
        let promised = now_ms + i64::from(self.rng.u32(48..=96)) * HOUR_MS;
        let shipped_after = i64::from(self.rng.u32(2..=30)) * HOUR_MS;
        // About one in twelve arrives after its promise.
        let transit = if self.rng.u32(..12) == 0 {
            promised - now_ms - shipped_after + i64::from(self.rng.u32(2..=30)) * HOUR_MS
        } else {
            let room = (promised - now_ms - shipped_after) / HOUR_MS;
            i64::from(self.rng.u32(12..=room.max(13) as u32 - 1)) * HOUR_MS
        };
        self.fulfilment.push(Reverse((
            now_ms + shipped_after,
            n,
            Step::Ship { promised, transit },
        )));
        let (country, city) = self.pick(&CITIES);
        let fields = json!({
            "order_id": format!("O-{n:08}"),
            "customer_id": format!("C-{:07}", self.rng.u32(1..200_000)),
            "lines": lines,
            "total": {"amount": total, "currency": "EUR"},
            "promised_delivery_at": rfc3339(promised),
            "ship_to": {"country": country, "city": city},
        });
        Some(self.event(ORDER, None, now_ms, &text(&fields)))
    }

    fn fulfil(&mut self, order: u64, step: Step, now_ms: i64) -> Event {
        let carrier = CARRIERS[(order % CARRIERS.len() as u64) as usize];
        let (status, promised, shipped) = match step {
            Step::Ship { promised, transit } => {
                self.fulfilment.push(Reverse((
                    now_ms + transit,
                    order,
                    Step::Deliver {
                        promised,
                        shipped: now_ms,
                    },
                )));
                ("shipped", promised, now_ms)
            }
            Step::Deliver { promised, shipped } => ("delivered", promised, shipped),
        };
        let mut fields = json!({
            "shipment_id": format!("SH-{order:08}"),
            "order_id": format!("O-{order:08}"),
            "status": status,
            "carrier": carrier,
            "promised_delivery_at": rfc3339(promised),
            "shipped_at": rfc3339(shipped),
        });
        if status == "delivered" {
            fields["delivered_at"] = Value::String(rfc3339(now_ms));
        }
        self.event(SHIPMENT, None, now_ms, &text(&fields))
    }

    fn review(&mut self, now_ms: i64) -> Option<Event> {
        let p = live(&mut self.rng, &self.products, |p| p.live)?;
        self.reviews += 1;
        let rating = [5, 5, 5, 4, 4, 4, 3, 2, 1][self.rng.usize(..9)];
        let title = [
            "Love it",
            "Does the job",
            "As described",
            "Not for me",
            "Great value",
        ][self.rng.usize(..5)];
        let fields = json!({
            "review_id": format!("R-{:08}", self.reviews),
            "sku": self.products[p].sku,
            "customer_id": format!("C-{:07}", self.rng.u32(1..200_000)),
            "rating": rating,
            "title": title,
            "body": format!("{title}. Rated {rating} of 5 after {} weeks.", self.rng.u32(1..20)),
        });
        Some(self.event(REVIEW, None, now_ms, &text(&fields)))
    }

    fn product_change(&mut self, now_ms: i64) -> Option<Event> {
        let p = live(&mut self.rng, &self.products, |p| p.live)?;
        let color = self.pick(&COLORS);
        let images = self.rng.usize(1..=4);
        let product = &mut self.products[p];
        product.data["attributes"]["color"] = Value::String(color.into());
        let sku = product.sku.clone();
        product.data["images"] = (0..images)
            .map(|i| Value::String(format!("https://images.shop.test/{sku}/{i}.jpg")))
            .collect();
        let data = text(&product.data);
        Some(self.change(PRODUCT, &sku, "U", now_ms, &data))
    }

    /// A product leaves the catalog, with its offers and stock.
    fn discontinue(&mut self, now_ms: i64) -> Option<Event> {
        let p = live(&mut self.rng, &self.products, |p| p.live)?;
        self.products[p].live = false;
        let (sku, data) = (self.products[p].sku.clone(), text(&self.products[p].data));
        let e = self.change(PRODUCT, &sku, "D", now_ms, &data);
        for o in self.products[p].offers.clone() {
            if std::mem::replace(&mut self.offers[o].live, false) {
                let e = self.change(OFFER, &sku, "D", now_ms, &self.offers[o].data());
                self.pending.push_back(e);
            }
        }
        for s in self.products[p].stock.clone() {
            self.stock[s].live = false;
            let e = self.change(STOCK, &sku, "D", now_ms, &self.stock[s].data());
            self.pending.push_back(e);
        }
        Some(e)
    }
}

impl Offer {
    /// The offer as JSON text (three in four of the shop's events are an offer's or
    /// a stock row's, so they are written directly).
    fn data(&self) -> String {
        let mut out = String::with_capacity(192);
        out.push_str(r#"{"offer_id":"#);
        quoted(&mut out, &self.id);
        out.push_str(r#","sku":"#);
        quoted(&mut out, &self.sku);
        out.push_str(r#","seller":"#);
        quoted(&mut out, self.seller);
        let _ = write!(
            out,
            r#","price":{{"amount":{},"currency":"EUR"}},"condition":"#,
            self.amount
        );
        quoted(&mut out, self.condition);
        let _ = write!(out, r#","dispatch_days":{}}}"#, self.dispatch_days);
        out
    }
}

impl Stock {
    /// The stock row as JSON text.
    fn data(&self) -> String {
        let mut out = String::with_capacity(128);
        out.push_str(r#"{"sku":"#);
        quoted(&mut out, &self.sku);
        out.push_str(r#","location":"#);
        quoted(&mut out, self.location);
        let kind = if self.store { "store" } else { "warehouse" };
        let _ = write!(out, r#","location_type":"{kind}","qty":{}}}"#, self.qty);
        out
    }
}

/// `s` as a JSON string.
fn quoted(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// A `Value` as JSON text.
fn text(v: &Value) -> String {
    serde_json::to_string(v).expect("a Value always serializes")
}

/// A random live item: a few tries, then none (the catalog is nearly all live).
fn live<T>(rng: &mut fastrand::Rng, items: &[T], is_live: impl Fn(&T) -> bool) -> Option<usize> {
    if items.is_empty() {
        return None;
    }
    (0..8)
        .map(|_| rng.usize(..items.len()))
        .find(|&i| is_live(&items[i]))
}

/// A shop price: whole euros and 99 cents.
fn price_ending(cents: i64) -> i64 {
    (cents / 100).max(0) * 100 + 99
}

#[cfg(test)]
mod tests;
